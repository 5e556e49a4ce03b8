"""``MemoryStore``: the reference implementation of :class:`tether.store.interfaces.Store`.

Unit tests of the domain run against it, so it behaves like the SQL store in everything the
contract says: the same errors (``AgentExists``, ``VersionConflict``, ``KeyExists``,
``KeyNotFound``, ``ReplayDetected``, ``OperatorTokenNotFound``, ``PolicySetNotFound``,
``Conflict`` for a taken revocation id, ``AgentNotFound`` for a key or instance of an unknown
agent), the same orders, and values that
come back as the SQL store returns them (mappings read-only; audit details as they read after a
JSON round trip), and a naive datetime is a ``ValueError`` before anything is written. One
``asyncio.Lock`` makes each operation atomic for concurrent coroutines. The contract suite
(``tests/integration/test_store_contract.py``) runs it side by side with SQLite and PostgreSQL.

Example::

    >>> import asyncio
    >>> store = MemoryStore()
    >>> asyncio.run(store.list_agents())
    []
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType, TracebackType

from tether._internal.clock import Clock, SystemClock
from tether.audit.records import AuditRecord
from tether.audit.stored import AuditLocation, LogEntry, SignedCheckpoint, StoredEntry
from tether.audit.tiles import TreeNode
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.errors import (
    AgentExists,
    AgentNotFound,
    Conflict,
    KeyExists,
    KeyNotFound,
    LogPositionTaken,
    OperatorTokenNotFound,
    PolicySetNotFound,
    ReplayDetected,
    VersionConflict,
)
from tether.identity.models import (
    Agent,
    AgentKey,
    AgentState,
    Instance,
    OperatorToken,
    RiskAssessment,
)
from tether.identity.revocations import Revocation
from tether.policy.models import PolicySetVersion
from tether.store._memory_approvals import MemoryApprovals
from tether.store._memory_credentials import MemoryCredentials
from tether.store._memory_delegation import MemoryDelegation
from tether.store._memory_mcp import MemoryMcp
from tether.store._memory_monitor import MemoryMonitor
from tether.store._memory_values import as_utc, in_utc

__all__ = ["MemoryStore"]

#: The most policy sets one page lists, as in the SQL store.
_MAX_POLICY_PAGE = 500


def _version_name(version: int | None) -> str:
    return "none" if version is None else f"version {version}"


class MemoryStore(MemoryMonitor, MemoryMcp, MemoryDelegation, MemoryApprovals, MemoryCredentials):
    """Everything in dictionaries; ``clock`` decides when a replay key has expired. Leases and
    credential engines come from :class:`~tether.store._memory_credentials.MemoryCredentials`,
    users and grants from :class:`~tether.store._memory_delegation.MemoryDelegation`, approval
    requests from :class:`~tether.store._memory_approvals.MemoryApprovals`, the MCP gateway's
    upstreams and tool pins from :class:`~tether.store._memory_mcp.MemoryMcp`, alerts and
    observed use from :class:`~tether.store._memory_monitor.MemoryMonitor` (whose
    ``__init__`` each run the next one's, so they come first)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__()
        self._clock = clock or SystemClock()
        self._lock = asyncio.Lock()
        self._agents: dict[str, Agent] = {}
        self._agent_ids_by_name: dict[str, str] = {}
        self._assessments: dict[str, list[RiskAssessment]] = {}
        self._assessment_ids: set[str] = set()
        self._keys: dict[tuple[str, str], AgentKey] = {}
        self._instances: dict[tuple[str, str], Instance] = {}
        self._replay: dict[str, datetime] = {}
        self._tokens: dict[str, OperatorToken] = {}
        self._token_ids_by_hash: dict[str, str] = {}
        self._stored_keys: dict[str, StoredKey] = {}
        self._audit: list[AuditRecord] = []
        self._audit_ids: set[str] = set()
        # Where each record sits: record id → (log, index); a log's entries in order.
        self._audit_places: dict[str, tuple[str, int]] = {}
        self._entries: dict[str, list[StoredEntry]] = {}
        self._nodes: dict[tuple[str, int, int], bytes] = {}
        self._checkpoints: dict[str, dict[int, SignedCheckpoint]] = {}
        self._policy_sets: list[PolicySetVersion] = []  # version n at index n - 1
        self._active_policy: int | None = None
        self._revocations: dict[str, Revocation] = {}

    async def close(self) -> None:
        """Nothing to give back; present for the ``Store`` contract."""

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- agents --------------------------------------------------------------------------

    def _require_agent(self, agent_id: str) -> None:
        if agent_id not in self._agents:
            raise AgentNotFound("no agent with this id")

    def _check_assessment(self, agent: Agent, assessment: RiskAssessment) -> None:
        # As SQL's constraints do: a foreign key to agents, a unique id.
        if assessment.agent_id != agent.id and assessment.agent_id not in self._agents:
            raise AgentNotFound("the assessment names an unknown agent")
        if assessment.id in self._assessment_ids:
            raise AgentExists(f"an agent named {agent.name!r} already exists")

    def _add_assessment(self, assessment: RiskAssessment) -> None:
        """Store an assessment already checked and converted (``_utc``): this cannot fail."""
        self._assessment_ids.add(assessment.id)
        history = self._assessments.setdefault(assessment.agent_id, [])
        history.append(assessment)
        # Oldest first; the sort is stable, so insertion order breaks ties as SQL's seq does.
        history.sort(key=lambda a: a.assessed_at)

    async def create_agent(self, agent: Agent, assessment: RiskAssessment) -> None:
        # Everything that can fail happens before the first write: all or nothing, as in SQL.
        stored, first = in_utc(agent), in_utc(assessment)
        async with self._lock:
            if agent.name in self._agent_ids_by_name or agent.id in self._agents:
                raise AgentExists(f"an agent named {agent.name!r} already exists")
            self._check_assessment(agent, assessment)
            self._agents[agent.id] = stored
            self._agent_ids_by_name[agent.name] = agent.id
            self._add_assessment(first)

    async def get_agent(self, name: str) -> Agent | None:
        async with self._lock:
            agent_id = self._agent_ids_by_name.get(name)
            return None if agent_id is None else self._agents[agent_id]

    async def get_agent_with_keys(self, name: str) -> tuple[Agent, list[AgentKey]] | None:
        async with self._lock:
            agent_id = self._agent_ids_by_name.get(name)
            if agent_id is None:
                return None
            return self._agents[agent_id], self._active_keys(agent_id)

    async def get_agent_by_id(self, agent_id: str) -> Agent | None:
        async with self._lock:
            return self._agents.get(agent_id)

    async def list_agents(
        self, *, state: AgentState | None = None, limit: int = 100, after: str | None = None
    ) -> list[Agent]:
        async with self._lock:
            chosen = sorted(
                (
                    a
                    for a in self._agents.values()
                    if (state is None or a.state is state) and (after is None or a.name > after)
                ),
                key=lambda a: a.name,
            )
        return chosen[: max(0, limit)]

    async def update_agent(
        self,
        agent: Agent,
        *,
        expected_version: int,
        assessment: RiskAssessment | None = None,
        revocation: Revocation | None = None,
    ) -> None:
        stored = in_utc(agent)
        added = None if assessment is None else in_utc(assessment)
        revoked = None if revocation is None else in_utc(revocation)
        async with self._lock:
            current = self._agents.get(agent.id)
            if current is None or current.version != expected_version:
                raise VersionConflict(
                    f"agent {agent.name!r} changed since version {expected_version}"
                )
            holder = self._agent_ids_by_name.get(agent.name)
            if holder is not None and holder != agent.id:
                raise AgentExists(f"an agent named {agent.name!r} already exists")
            if assessment is not None:
                self._check_assessment(agent, assessment)
            if revoked is not None:
                self._check_new_revocation(revoked)
            del self._agent_ids_by_name[current.name]
            self._agents[agent.id] = stored
            self._agent_ids_by_name[agent.name] = agent.id
            if added is not None:
                self._add_assessment(added)
            if revoked is not None:
                self._revocations[revoked.id] = revoked

    async def list_assessments(self, agent_id: str) -> list[RiskAssessment]:
        async with self._lock:
            return list(self._assessments.get(agent_id, ()))

    # -- keys and instances --------------------------------------------------------------

    async def add_key(self, key: AgentKey) -> None:
        stored = in_utc(replace(key, jwk=MappingProxyType(dict(key.jwk))))
        async with self._lock:
            self._require_agent(key.agent_id)
            if (key.agent_id, key.kid) in self._keys:
                raise KeyExists(f"the agent already has a key with kid {key.kid!r}")
            self._keys[key.agent_id, key.kid] = stored

    def _active_keys(self, agent_id: str, *, include_removed: bool = False) -> list[AgentKey]:
        """The agent's keys, oldest first; call with the lock held."""
        keys = [
            k
            for (owner, _), k in self._keys.items()
            if owner == agent_id and (include_removed or k.active)
        ]
        return sorted(keys, key=lambda k: (k.created_at, k.kid))

    async def list_keys(self, agent_id: str, *, include_removed: bool = False) -> list[AgentKey]:
        async with self._lock:
            return self._active_keys(agent_id, include_removed=include_removed)

    async def remove_key(self, agent_id: str, kid: str, *, at: datetime) -> AgentKey:
        removed_at = as_utc(at)
        async with self._lock:
            key = self._keys.get((agent_id, kid))
            if key is None or not key.active:
                raise KeyNotFound(f"the agent has no active key with kid {kid!r}")
            removed = self._keys[agent_id, kid] = replace(key, removed_at=removed_at)
            return removed

    async def record_instance_seen(
        self,
        *,
        agent_id: str,
        instance_id: str,
        spiffe_id: str,
        kid: str | None,
        auth_method: str,
        at: datetime,
    ) -> Instance:
        seen_at = as_utc(at)
        async with self._lock:
            self._require_agent(agent_id)
            return self._see_instance(
                agent_id=agent_id,
                instance_id=instance_id,
                spiffe_id=spiffe_id,
                kid=kid,
                auth_method=auth_method,
                seen_at=seen_at,
            )

    async def record_authentication(
        self,
        *,
        replay_key: str | None,
        replay_expires_at: datetime | None,
        agent_id: str,
        instance_id: str,
        spiffe_id: str,
        kid: str | None,
        auth_method: str,
        at: datetime,
    ) -> Instance:
        seen_at = as_utc(at)
        if replay_key is not None and replay_expires_at is None:
            raise ValueError("a replay key needs the time it expires")
        expires = None if replay_expires_at is None else as_utc(replay_expires_at)
        async with self._lock:
            # Everything that can fail first (the replay, as SQL's first statement), then write.
            if replay_key is not None:
                self._check_unused(replay_key)
            self._require_agent(agent_id)
            if replay_key is not None and expires is not None:
                self._replay[replay_key] = expires
            return self._see_instance(
                agent_id=agent_id,
                instance_id=instance_id,
                spiffe_id=spiffe_id,
                kid=kid,
                auth_method=auth_method,
                seen_at=seen_at,
            )

    def _see_instance(
        self,
        *,
        agent_id: str,
        instance_id: str,
        spiffe_id: str,
        kid: str | None,
        auth_method: str,
        seen_at: datetime,
    ) -> Instance:
        """Upsert an instance of an agent known to exist; call with the lock held."""
        known = self._instances.get((agent_id, instance_id))
        instance = Instance(
            agent_id=agent_id,
            instance_id=instance_id,
            spiffe_id=spiffe_id,
            first_seen=seen_at if known is None else known.first_seen,
            last_seen=seen_at,
            last_kid=kid,
            last_auth_method=auth_method,
        )
        self._instances[agent_id, instance_id] = instance
        return instance

    async def list_instances(self, agent_id: str) -> list[Instance]:
        async with self._lock:
            found = [i for (owner, _), i in self._instances.items() if owner == agent_id]
        return sorted(found, key=lambda i: (i.first_seen, i.instance_id))

    # -- replay --------------------------------------------------------------------------

    async def consume_once(self, key: str, *, expires_at: datetime) -> None:
        expires = as_utc(expires_at)
        async with self._lock:
            self._check_unused(key)
            self._replay[key] = expires

    def _check_unused(self, key: str) -> None:
        """``ReplayDetected`` if ``key`` is recorded and unexpired; call with the lock held."""
        recorded = self._replay.get(key)
        if recorded is not None and recorded > self._clock.now():
            raise ReplayDetected("this single-use value has been used already")

    async def purge_replay_keys(self, *, before: datetime) -> int:
        cutoff = as_utc(before)
        async with self._lock:
            expired = [k for k, expires in self._replay.items() if expires < cutoff]
            for k in expired:
                del self._replay[k]
            return len(expired)

    # -- token revocations ---------------------------------------------------------------

    def _check_new_revocation(self, revocation: Revocation) -> None:
        """``Conflict`` if the id is taken, as SQL's primary key; call with the lock held."""
        if revocation.id in self._revocations:
            raise Conflict(f"revocation {revocation.id!r} exists already")

    async def add_revocation(self, revocation: Revocation) -> None:
        stored = in_utc(revocation)
        async with self._lock:
            self._check_new_revocation(stored)
            self._revocations[stored.id] = stored

    async def list_revocations(self, *, now: datetime) -> list[Revocation]:
        moment = as_utc(now)
        async with self._lock:
            live = [r for r in self._revocations.values() if r.until > moment]
        return sorted(live, key=lambda r: (r.revoked_at, r.id))

    async def purge_revocations(self, *, before: datetime) -> int:
        cutoff = as_utc(before)
        async with self._lock:
            expired = [i for i, r in self._revocations.items() if r.until <= cutoff]
            for revocation_id in expired:
                del self._revocations[revocation_id]
            return len(expired)

    # -- operator tokens -----------------------------------------------------------------

    async def create_operator_token(self, token: OperatorToken) -> None:
        stored = in_utc(token)
        async with self._lock:
            if token.id in self._tokens or token.token_hash in self._token_ids_by_hash:
                raise Conflict("an operator token with this id or hash exists")
            self._tokens[token.id] = stored
            self._token_ids_by_hash[token.token_hash] = token.id

    async def get_operator_token(self, token_hash: str) -> OperatorToken | None:
        async with self._lock:
            token_id = self._token_ids_by_hash.get(token_hash)
            return None if token_id is None else self._tokens[token_id]

    async def list_operator_tokens(self) -> list[OperatorToken]:
        async with self._lock:
            tokens = list(self._tokens.values())
        return sorted(tokens, key=lambda t: (t.created_at, t.id))

    async def revoke_operator_token(self, token_id: str, *, at: datetime) -> None:
        revoked_at = as_utc(at)
        async with self._lock:
            token = self._tokens.get(token_id)
            if token is None:
                raise OperatorTokenNotFound(f"no operator token with id {token_id!r}")
            if token.revoked_at is None:  # a second revocation keeps the first time
                self._tokens[token_id] = replace(token, revoked_at=revoked_at)

    # -- key ring ------------------------------------------------------------------------

    async def list_stored_keys(self, purpose: KeyPurpose | None = None) -> list[StoredKey]:
        async with self._lock:
            keys = [k for k in self._stored_keys.values() if purpose in (None, k.purpose)]
        return sorted(keys, key=lambda k: (k.created_at, k.kid))

    async def save_stored_key(self, key: StoredKey) -> None:
        stored = in_utc(key)
        async with self._lock:
            self._stored_keys[key.kid] = stored

    # -- audit ---------------------------------------------------------------------------

    async def append_audit_entries(
        self, entries: Sequence[LogEntry], nodes: Sequence[TreeNode], *, adopt: bool = False
    ) -> list[int]:
        if not entries:
            return []
        log = entries[0].log
        async with self._lock:
            stored = self._entries.setdefault(log, [])
            if len(stored) != entries[0].index:
                raise LogPositionTaken(
                    f"audit log {log!r} ends at {len(stored) - 1}, not {entries[0].index - 1}: "
                    "another writer appends to it",
                    details={"log": log},
                )
            ids = [e.record.id for e in entries]
            if adopt:
                if any(i not in self._audit_ids or i in self._audit_places for i in ids):
                    raise LogPositionTaken("an audit record was adopted by another log")
                numbers = [n for n, r in enumerate(self._audit, start=1) if r.id in set(ids)]
            else:
                if len(set(ids)) != len(ids) or self._audit_ids.intersection(ids):
                    raise Conflict("an audit record of the batch was appended already")
                self._audit_ids.update(ids)
                first = len(self._audit) + 1
                # What the SQL store reads back: the record in its entry.
                self._audit += [AuditRecord.from_entry(e.entry) for e in entries]
                numbers = list(range(first, first + len(entries)))
            for e in entries:
                self._audit_places[e.record.id] = (log, e.index)
                stored.append(StoredEntry(index=e.index, entry=e.entry, chain=e.chain))
            for level, index, digest in nodes:
                self._nodes[(log, level, index)] = digest
            return numbers

    async def audit_log_end(self, log: str) -> StoredEntry | None:
        async with self._lock:
            stored = self._entries.get(log)
            return stored[-1] if stored else None

    async def audit_entries(self, log: str, *, start: int, stop: int) -> list[StoredEntry]:
        async with self._lock:
            return self._entries.get(log, [])[max(0, start) : max(0, stop)]

    async def audit_tree_nodes(
        self, log: str, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        async with self._lock:
            found = {(lv, i): self._nodes.get((log, lv, i)) for lv, i in keys}
        return {k: v for k, v in found.items() if v is not None}

    async def add_audit_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        stored_checkpoint = replace(checkpoint, signed_at=as_utc(checkpoint.signed_at))
        async with self._lock:
            held = self._checkpoints.setdefault(checkpoint.log, {})
            earlier = held.get(checkpoint.size)
            if earlier is not None and earlier.root != checkpoint.root:
                raise Conflict(
                    f"a checkpoint of {checkpoint.log!r} at size {checkpoint.size} with another "
                    "root is stored already",
                    details={"log": checkpoint.log, "size": checkpoint.size},
                )
            held.setdefault(checkpoint.size, stored_checkpoint)

    async def latest_audit_checkpoint(self, log: str) -> SignedCheckpoint | None:
        async with self._lock:
            held = self._checkpoints.get(log, {})
            return held[max(held)] if held else None

    async def audit_checkpoints(
        self, log: str, *, after_size: int = 0, limit: int = 1000
    ) -> list[SignedCheckpoint]:
        async with self._lock:
            held = self._checkpoints.get(log, {})
            return [held[n] for n in sorted(held) if n > after_size][: max(0, limit)]

    async def audit_logs(self) -> list[str]:
        async with self._lock:
            return sorted(log for log, stored in self._entries.items() if stored)

    async def unchained_audit_records(self, *, limit: int) -> list[AuditRecord]:
        async with self._lock:
            loose = [r for r in self._audit if r.id not in self._audit_places]
        return loose[: max(0, limit)]

    async def find_audit_record(self, record_id: str) -> AuditLocation | None:
        async with self._lock:
            for sequence, record in enumerate(self._audit, start=1):
                if record.id == record_id:
                    log, index = self._audit_places.get(record_id, (None, None))
                    return AuditLocation(sequence=sequence, record=record, log=log, index=index)
        return None

    async def list_audit(
        self,
        *,
        after_sequence: int = 0,
        limit: int = 100,
        type_prefix: str | None = None,
        correlation_id: str | None = None,
    ) -> list[tuple[int, AuditRecord]]:
        async with self._lock:
            numbered = list(enumerate(self._audit, start=1))[max(0, after_sequence) :]
        chosen = [
            (seq, r)
            for seq, r in numbered
            if (type_prefix is None or r.type.startswith(type_prefix))
            and (correlation_id is None or r.correlation_id == correlation_id)
        ]
        return chosen[: max(0, limit)]

    # -- policy sets ---------------------------------------------------------------------

    def _check_active(self, expected: int | None) -> None:
        """``VersionConflict`` unless ``expected`` is the active version; call with the lock."""
        if self._active_policy != expected:
            raise VersionConflict(
                f"the active policy set is {_version_name(self._active_policy)}, "
                f"not {_version_name(expected)} as expected"
            )

    def _policy_set(self, version: int) -> PolicySetVersion | None:
        """The stored ``version``, if any; call with the lock held."""
        return self._policy_sets[version - 1] if 1 <= version <= len(self._policy_sets) else None

    async def add_policy_set(
        self,
        *,
        text: str,
        sha256: str,
        created_at: datetime,
        created_by: str,
        comment: str | None,
        activate: bool,
        expected_active: int | None,
    ) -> PolicySetVersion:
        created = as_utc(created_at)
        async with self._lock:
            if activate:
                self._check_active(expected_active)
            added = PolicySetVersion(
                version=len(self._policy_sets) + 1,
                text=text,
                sha256=sha256,
                created_at=created,
                created_by=created_by,
                comment=comment,
            )
            self._policy_sets.append(added)
            if activate:
                self._active_policy = added.version
            return added

    async def activate_policy_set(
        self, version: int, *, expected_active: int | None, at: datetime
    ) -> None:
        as_utc(at)  # refused like the SQL store's updated_at column; otherwise not kept
        async with self._lock:
            if self._policy_set(version) is None:
                raise PolicySetNotFound(f"no policy set with version {version}")
            self._check_active(expected_active)
            self._active_policy = version

    async def get_policy_set(self, version: int) -> PolicySetVersion | None:
        async with self._lock:
            return self._policy_set(version)

    async def active_policy_set(self) -> PolicySetVersion | None:
        async with self._lock:
            active = self._active_policy
            return None if active is None else self._policy_sets[active - 1]

    async def active_policy_version(self) -> int | None:
        async with self._lock:
            return self._active_policy

    async def list_policy_sets(
        self, *, limit: int = 100, before: int | None = None
    ) -> list[PolicySetVersion]:
        async with self._lock:
            newest_first = self._policy_sets[::-1]
        chosen = [p for p in newest_first if before is None or p.version < before]
        return chosen[: min(max(1, limit), _MAX_POLICY_PAGE)]
