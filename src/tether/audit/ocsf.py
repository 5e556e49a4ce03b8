"""OCSF export: one audit log entry as one OCSF 1.3.0 event, for SIEMs.

``tether audit export --format ocsf`` writes, for each entry ``{"index", "log", "prev",
"record"}`` of the log, the event :func:`to_ocsf` returns. The mapping is pure (standard
library only) and total: every record type becomes an event, unknown types included; only a
malformed record (a required key missing or of the wrong type) raises :class:`ValueError`.

Target: OCSF **1.3.0** (``OCSF_VERSION``; https://schema.ocsf.io/1.3.0/). Classes used:

* **API Activity** (``class_uid`` 6003, category 6 Application Activity) for ``decision``
  records. The attempted call sets the activity the way OCSF maps API verbs: ``read``,
  ``list_tools`` and ``query`` are 2 Read, ``write`` 3 Update, ``delete`` 4 Delete; any other
  action (``call_tool``, ``invoke_agent``, …) is 99 Other with the action as
  ``activity_name``. A deny (or an approval still required) is status Failure, its reasons in
  ``status_detail``. The agent is the actor's application (``actor.app_name`` = agent,
  ``actor.app_uid`` = the SPIFFE ID of the record's actor), its instance the
  ``src_endpoint.uid``; a delegated ``user`` is ``actor.user`` and a ``session`` is
  ``actor.session.uid``. The determining policies are ``actor.authorizations``, the 1.3.0
  home of an authorization outcome and its policies (``decision`` = the effect, ``policy`` =
  ``{uid, name, version}``). ``api.operation`` is the action, ``api.request.uid`` the
  decision id, ``resources`` the Cedar resource (``uid``, ``type``, ``name``).
* **Authentication** (3002, category 3 Identity & Access Management) for
  ``client.authentication_failed`` and ``svid.jwt_issued`` (1 Logon over 6 OAUTH 2.0; the
  issued token is the ``session``), and ``svid.x509_issued`` (99 Other,
  ``"Issue X.509-SVID"``). ``user`` is the subject that authenticated (or claimed to).
* **Entity Management** (3004, category 3) for every other type. The verb that ends the type
  picks the activity: registered/created/added 1 Create, updated/changed 3 Update,
  removed/deleted 4 Delete, approved/enabled 8 Enable, disabled 9 Disable, suspended 12
  Suspend, resumed 13 Resume; an ``agent.state_changed`` to ``suspended`` is Suspend and to
  ``active`` Resume. Verbs OCSF has no id for are 99 Other with a name (``svid.revoked`` and
  ``operator.token_revoked`` "Revoke", ``keyring.key_retired`` "Retire"); an unknown verb is 99
  Other named by the record type. ``entity`` is ``{uid, name, type, data}`` (``data`` = the
  record's details).

Every event carries ``time`` (epoch milliseconds), ``timezone_offset``, ``type_uid`` =
``class_uid * 100 + activity_id``, ``severity_id`` (1 Informational, 2 Low for a failure or a
deny), ``status_id`` (1 Success, 2 Failure, from the record's outcome) and ``metadata``:
``version`` = ``OCSF_VERSION``, ``product`` Tether, ``uid`` = the record id,
``correlation_uid``, ``log_name`` = the log's origin, ``sequence`` = the entry index,
``event_code`` = the record type and ``original_time``. Details with no OCSF home go to
``unmapped`` — but never the decision's ``request`` (what the engine evaluated: it can be large
and is for replay, not for SIEMs; ``call_digest`` identifies the call). Records hold no secrets
and nothing is added to them; every value is copied as plain JSON.

Example::

    >>> event = to_ocsf(
    ...     {"id": "rec_1", "type": "agent.registered", "time": "2026-12-01T12:00:00+00:00",
    ...      "actor": "operator:alice", "subject": "spiffe://acme.org/agent/faq-bot",
    ...      "outcome": "success", "correlation_id": None, "details": {"name": "faq-bot"}},
    ...     log="acme.org/audit/r1", index=7)
    >>> event["class_name"], event["activity_name"], event["type_uid"], event["time"]
    ('Entity Management', 'Create', 300401, 1796126400000)
    >>> event["entity"]["name"], event["actor"]["user"]["name"], event["metadata"]["sequence"]
    ('faq-bot', 'alice', 7)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tether import __version__

__all__ = ["OCSF_VERSION", "to_ocsf"]

#: The OCSF schema version the events follow (``metadata.version``).
OCSF_VERSION = "1.3.0"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)

_IAM = (3, "Identity & Access Management")
_APPLICATION = (6, "Application Activity")
_AUTHENTICATION = (3002, "Authentication")
_ENTITY_MANAGEMENT = (3004, "Entity Management")
_API_ACTIVITY = (6003, "API Activity")

_OTHER = 99
_READ = (2, "Read")

#: API Activity: the decision's action → the CRUD activity of the call it was about.
_API_ACTIONS: Mapping[str, tuple[int, str]] = {
    "read": _READ,
    "list_tools": _READ,
    "query": _READ,
    "write": (3, "Update"),
    "delete": (4, "Delete"),
}

#: Authentication: record type → activity.
_AUTHENTICATIONS: Mapping[str, tuple[int, str]] = {
    "client.authentication_failed": (1, "Logon"),
    "svid.jwt_issued": (1, "Logon"),
    "svid.x509_issued": (_OTHER, "Issue X.509-SVID"),
}
_OAUTH2 = (6, "OAUTH 2.0")

#: Entity Management: the verb ending the record type → activity.
_VERBS: Mapping[str, tuple[int, str]] = {
    "created": (1, "Create"),
    "registered": (1, "Create"),
    "added": (1, "Create"),
    "read": _READ,
    "updated": (3, "Update"),
    "changed": (3, "Update"),
    "deleted": (4, "Delete"),
    "removed": (4, "Delete"),
    "approved": (8, "Enable"),
    "enabled": (8, "Enable"),
    "disabled": (9, "Disable"),
    "suspended": (12, "Suspend"),
    "resumed": (13, "Resume"),
    "revoked": (_OTHER, "Revoke"),
    "retired": (_OTHER, "Retire"),
}

#: ``agent.state_changed``: the new state → activity, where OCSF has one (else Update).
_AGENT_STATES: Mapping[str, tuple[int, str]] = {
    "suspended": (12, "Suspend"),
    "active": (13, "Resume"),
}

#: The noun of a record type (its name less the verb) → the entity's type, and the detail
#: that identifies it (``None``: the record's subject).
_ENTITIES: Mapping[str, tuple[str, str | None]] = {
    "agent": ("Agent", None),
    "agent.state": ("Agent", None),
    "agent.key": ("Agent Key", "kid"),
    "svid": ("SVID", "target"),
    "operator.token": ("Operator Token", "token_id"),
    "keyring.key": ("Keyring Key", "kid"),
}

#: Actor labels ``<kind>:<name>`` that name a person or the system → user ``type_id``.
_USER_KINDS: Mapping[str, tuple[int, str]] = {
    "operator": (1, "User"),
    "system": (3, "System"),
}
_UNKNOWN_USER = (0, "Unknown")

#: Decision details that have an OCSF home (or, for ``request``, are left out on purpose).
_DECISION_MAPPED = frozenset(
    {"action", "agent", "decision_id", "instance", "policy_ids", "reasons", "request", "resource"}
    | {"session", "user"}
)
_AUTHENTICATION_MAPPED = frozenset({"exp", "jti", "reason"})


@dataclass(frozen=True, slots=True, kw_only=True)
class _Record:
    id: str
    type: str
    time: datetime
    original_time: str
    actor: str
    subject: str | None
    failed: bool
    correlation_id: str | None
    details: Mapping[str, object]


def to_ocsf(record: Mapping[str, object], *, log: str, index: int) -> dict[str, object]:
    """The OCSF event for ``record`` (:meth:`~tether.audit.records.AuditRecord.to_dict`),
    stored as entry ``index`` of the log ``log``. Raises :class:`ValueError` when a required
    key (``id``, ``type``, ``time``, ``actor``, ``outcome``) is missing or malformed."""
    if not isinstance(log, str) or not log:
        raise ValueError("log must be the log's origin, a non-empty string")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError("index must be the entry's position in the log, an integer >= 0")
    rec = _parse(record)
    if rec.type == "decision":
        return _api_activity(rec, log=log, index=index)
    if rec.type in _AUTHENTICATIONS:
        return _authentication(rec, log=log, index=index)
    return _entity_management(rec, log=log, index=index)


# -- the three classes -------------------------------------------------------------------


def _api_activity(rec: _Record, *, log: str, index: int) -> dict[str, object]:
    d = rec.details
    action = _text_of(d, "action")
    event = _base(
        rec,
        category=_APPLICATION,
        klass=_API_ACTIVITY,
        activity=_API_ACTIONS.get(action or "", (_OTHER, action or "Authorize")),
        log=log,
        index=index,
    )
    agent, instance = _text_of(d, "agent"), _text_of(d, "instance")
    actor = _actor(rec.actor)
    if agent:
        actor["app_name"] = agent
    if user := _user(d.get("user")):
        actor["user"] = user
    if session := _text_of(d, "session"):
        actor["session"] = {"uid": session}
    if authorizations := _authorizations(d):
        actor["authorizations"] = authorizations
    event["actor"] = actor
    operation = action or "unknown"
    api: dict[str, object] = {"operation": operation}
    if decision_id := _text_of(d, "decision_id"):
        api["request"] = {"uid": decision_id}
    event["api"] = api
    resource = _text_of(d, "resource") or rec.subject
    if resource:
        event["resources"] = [_resource(resource)]
    endpoint = {k: v for k, v in (("uid", instance), ("name", agent)) if v}
    if endpoint:
        event["src_endpoint"] = endpoint
    reasons = _texts_of(d, "reasons")
    effect = _text_of(d, "effect")
    if reasons or (rec.failed and effect):
        event["status_detail"] = "; ".join(reasons) if reasons else effect
    target = resource or "no resource"
    event["message"] = f"{agent or rec.actor} {operation} {target}: {effect or 'no effect'}"
    _add_unmapped(event, {k: v for k, v in d.items() if k not in _DECISION_MAPPED})
    return event


def _authentication(rec: _Record, *, log: str, index: int) -> dict[str, object]:
    d = rec.details
    event = _base(
        rec,
        category=_IAM,
        klass=_AUTHENTICATION,
        activity=_AUTHENTICATIONS[rec.type],
        log=log,
        index=index,
    )
    event["actor"] = _actor(rec.actor)
    event["user"] = _subject_user(rec.subject or _text_of(d, "claimed_client_id"))
    event["service"] = {"name": "Tether", "version": __version__}
    if rec.type != "svid.x509_issued":
        event["auth_protocol_id"], event["auth_protocol"] = _OAUTH2
    if jti := _text_of(d, "jti"):
        session: dict[str, object] = {"uid": jti}
        exp = d.get("exp")
        if isinstance(exp, int) and not isinstance(exp, bool):
            session["expiration_time"] = exp * 1000
        event["session"] = session
    if rec.failed and (why := _text_of(d, "reason") or _text_of(d, "error")):
        event["status_detail"] = why
    event["message"] = f"{rec.type} {rec.subject or 'unknown subject'}"
    _add_unmapped(event, {k: v for k, v in d.items() if k not in _AUTHENTICATION_MAPPED})
    return event


def _entity_management(rec: _Record, *, log: str, index: int) -> dict[str, object]:
    d = rec.details
    noun, verb = _noun_and_verb(rec.type)
    activity = _VERBS.get(verb, (_OTHER, rec.type))
    if rec.type == "agent.state_changed":
        activity = _AGENT_STATES.get(_text_of(d, "to") or "", activity)
    event = _base(
        rec,
        category=_IAM,
        klass=_ENTITY_MANAGEMENT,
        activity=activity,
        log=log,
        index=index,
    )
    event["actor"] = _actor(rec.actor)
    entity = _entity(rec, noun)
    event["entity"] = entity
    if reason := _text_of(d, "reason"):
        event["comment"] = reason
    if rec.failed and (error := _text_of(d, "error")):
        event["status_detail"] = error
    event["message"] = f"{rec.type} {rec.subject or entity.get('uid') or ''}".rstrip()
    if rec.subject and rec.subject != entity.get("uid"):
        event["unmapped"] = {"subject": rec.subject}
    return event


# -- parts -------------------------------------------------------------------------------


def _base(
    rec: _Record,
    *,
    category: tuple[int, str],
    klass: tuple[int, str],
    activity: tuple[int, str],
    log: str,
    index: int,
) -> dict[str, object]:
    """The attributes every event has (OCSF base event), with its class and activity."""
    offset = rec.time.utcoffset() or timedelta(0)
    metadata: dict[str, object] = {
        "version": OCSF_VERSION,
        "product": {"name": "Tether", "vendor_name": "Tether", "version": __version__},
        "uid": rec.id,
        "log_name": log,
        "sequence": index,
        "event_code": rec.type,
        "original_time": rec.original_time,
    }
    if rec.correlation_id:
        metadata["correlation_uid"] = rec.correlation_id
    return {
        "category_uid": category[0],
        "category_name": category[1],
        "class_uid": klass[0],
        "class_name": klass[1],
        "activity_id": activity[0],
        "activity_name": activity[1],
        "type_uid": klass[0] * 100 + activity[0],
        "type_name": f"{klass[1]}: {activity[1]}",
        "severity_id": 2 if rec.failed else 1,
        "severity": "Low" if rec.failed else "Informational",
        "status_id": 2 if rec.failed else 1,
        "status": "Failure" if rec.failed else "Success",
        "time": (rec.time - _EPOCH) // _MILLISECOND,
        "timezone_offset": offset // timedelta(minutes=1),
        "metadata": metadata,
    }


def _actor(label: str) -> dict[str, object]:
    """Who the record names as its actor: an agent (by SPIFFE ID) is an application, an
    operator or the system a user; anything else a user of unknown type."""
    if label.startswith("spiffe://"):
        actor: dict[str, object] = {"app_uid": label}
        if agent := _agent_name(label):
            actor["app_name"] = agent
        return actor
    kind, sep, name = label.partition(":")
    type_id, type_name = _USER_KINDS.get(kind, _UNKNOWN_USER) if sep else _UNKNOWN_USER
    user_name = name if sep and kind in _USER_KINDS else label
    return {"user": {"uid": label, "name": user_name, "type_id": type_id, "type": type_name}}


def _user(value: object) -> dict[str, object] | None:
    """The delegated user of a decision (an id, or an object with ``uid``/``name``/``email``)."""
    if isinstance(value, str) and value:
        return {"uid": value, "name": value, "type_id": 1, "type": "User"}
    if not isinstance(value, Mapping):
        return None
    user: dict[str, object] = {"type_id": 1, "type": "User"}
    for source, target in (("uid", "uid"), ("id", "uid"), ("sub", "uid"), ("name", "name")):
        if isinstance(value.get(source), str) and target not in user:
            user[target] = value[source]
    if isinstance(value.get("email"), str):
        user["email_addr"] = value["email"]
    return user if len(user) > 2 else None


def _subject_user(subject: str | None) -> dict[str, object]:
    """The subject an authentication was for (an agent instance, or what the caller
    claimed to be)."""
    if not subject:
        return {"name": "unknown", "type_id": _UNKNOWN_USER[0], "type": _UNKNOWN_USER[1]}
    if subject.startswith("spiffe://"):
        name = _agent_name(subject) or subject
        return {"uid": subject, "name": name, "type_id": _OTHER, "type": "Agent"}
    return {"uid": subject, "name": subject, "type_id": _UNKNOWN_USER[0], "type": "Unknown"}


def _authorizations(details: Mapping[str, object]) -> list[dict[str, object]]:
    """One authorization per determining policy (or one without a policy)."""
    effect = _text_of(details, "effect")
    version = details.get("policy_version")
    decision: dict[str, object] = {"decision": effect} if effect else {}
    policies = []
    for policy_id in _texts_of(details, "policy_ids"):
        policy: dict[str, object] = {"uid": policy_id, "name": policy_id}
        if version is not None:
            policy["version"] = str(version)
        policies.append(decision | {"policy": policy})
    return policies or ([decision] if decision else [])


def _resource(uid: str) -> dict[str, object]:
    """A Cedar entity uid (``Tool::"search"``) as an OCSF resource."""
    kind, sep, rest = uid.partition('::"')
    if sep and rest.endswith('"'):
        return {"uid": uid, "type": kind, "name": rest[:-1]}
    return {"uid": uid}


def _entity(rec: _Record, noun: str) -> dict[str, object]:
    entity_type, key = _ENTITIES.get(noun, (noun.replace(".", " ").replace("_", " "), None))
    entity: dict[str, object] = {"type": entity_type or rec.type}
    uid = (_text_of(rec.details, key) if key else None) or rec.subject
    if uid:
        entity["uid"] = uid
    name = None
    if entity_type == "Agent":
        name = _text_of(rec.details, "name") or (_agent_name(uid) if uid else None)
    elif entity_type == "Operator Token":
        name = rec.subject
    if name or not uid:
        entity["name"] = name or rec.type
    if rec.details:
        entity["data"] = _plain(rec.details)
    return entity


def _noun_and_verb(record_type: str) -> tuple[str, str]:
    """``agent.key_added`` → ``("agent.key", "added")``; ``svid.revoked`` → ``("svid",
    "revoked")``."""
    head, _, tail = record_type.partition(".")
    *words, verb = tail.split("_")
    return (f"{head}.{'_'.join(words)}" if words else head), verb


def _agent_name(spiffe_id: str) -> str | None:
    """The agent of ``spiffe://<trust domain>/agent/<name>[/i/<instance>]``."""
    parts = spiffe_id.removeprefix("spiffe://").split("/")
    if len(parts) >= 3 and parts[1] == "agent" and parts[2]:
        return parts[2]
    return None


def _add_unmapped(event: dict[str, object], details: Mapping[str, object]) -> None:
    if details:
        event["unmapped"] = _plain(details)


# -- input -------------------------------------------------------------------------------


def _parse(record: Mapping[str, object]) -> _Record:
    outcome = _required_text(record, "outcome")
    if outcome not in {"success", "failure"}:
        raise ValueError(f"audit record 'outcome' must be success or failure, not {outcome!r}")
    time, original_time = _time(record)
    subject, correlation_id = record.get("subject"), record.get("correlation_id")
    return _Record(
        id=_required_text(record, "id"),
        type=_required_text(record, "type"),
        time=time,
        original_time=original_time,
        actor=_required_text(record, "actor"),
        subject=subject if isinstance(subject, str) and subject else None,
        failed=outcome == "failure",
        correlation_id=correlation_id if isinstance(correlation_id, str) else None,
        details=_details(record),
    )


def _required_text(record: Mapping[str, object], key: str) -> str:
    if key not in record:
        raise ValueError(f"audit record has no {key!r}")
    value = record[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"audit record {key!r} must be a non-empty string")
    return value


def _details(record: Mapping[str, object]) -> Mapping[str, object]:
    details = record.get("details")
    if details is None:
        return {}
    if isinstance(details, Mapping):
        return details
    raise ValueError("audit record 'details' must be a mapping")


def _time(record: Mapping[str, object]) -> tuple[datetime, str]:
    value = record.get("time")
    if isinstance(value, datetime):
        parsed, text = value, value.isoformat()
    else:
        text = _required_text(record, "time")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"audit record 'time' is not ISO 8601: {text!r}") from None
    if parsed.utcoffset() is None:
        raise ValueError("audit record 'time' must carry a UTC offset")
    return parsed, text


def _text_of(details: Mapping[str, object], key: str) -> str | None:
    value = details.get(key)
    return value if isinstance(value, str) and value else None


def _texts_of(details: Mapping[str, object], key: str) -> list[str]:
    value = details.get(key)
    if isinstance(value, str) or not isinstance(value, list | tuple):
        return []
    return [str(v) for v in value if v is not None]


def _plain(value: object) -> object:
    """``value`` as plain JSON: objects with string keys, lists, strings, finite numbers,
    booleans and null (anything else as its string)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_plain(v) for v in value), key=str)
    return str(value)
