"""The MCP gateway: Tether between every agent and every MCP server.

Agents reach an upstream MCP server a ``platform-admin`` registered at ``/mcp/<server>`` (MCP
streamable HTTP, both protocol eras of the official ``mcp`` SDK), with a bearer token minted for
that server. Every ``tools/list`` is filtered by policy and every ``tools/call`` goes through the
checkpoint; tools are pinned (a changed definition is held back before the next call is
forwarded); the upstream gets only the credential Tether injects, never the agent's token.

* :mod:`.models` — upstream servers and tool pins, as values;
* :mod:`.pinning` — the rug-pull defence, pure rules;
* :mod:`.registry` — registering servers, approving tools, reviewing listings;
* :mod:`.gateway` — the SDK server's handlers; :mod:`.asgi` — the HTTP front.
"""
