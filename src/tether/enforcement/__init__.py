"""Enforcement points: thin adapters that put the checkpoint where agents act.

``tether.enforcement.mcp`` is the MCP gateway. Each adapter turns what it sees (a tool call, an
HTTP request, a SQL statement) into a :class:`~tether.checkpoint.CheckRequest`, and any
exception on the way into a refusal: they fail closed.
"""
