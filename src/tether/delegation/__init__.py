"""Delegation: users, their consent grants, and the tokens that tie an agent's action to them.

An agent never acts *as* a user. A user signs in (Tether's built-in OpenID Connect provider,
or an external one), consents to one agent for some scopes and a purpose — a
:class:`~tether.delegation.models.Grant` — and the agent exchanges the user's token for a
delegated token (RFC 8693) that says: this agent instance, for this user, for this purpose, in
this session, under this grant — never more than the grant and the user's token allow.
"""

__all__: list[str] = []
