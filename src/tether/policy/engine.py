"""The rule engine's contract, in domain terms; :mod:`tether.policy._cedar` fulfils it.

Rules every engine keeps (and the tests hold it to):

* deny by default: only an explicit permit allows, and any forbid wins;
* fail closed: an engine error, a request that does not fit the schema, an unknown entity or
  action type, or an evaluation error in any policy is ``deny`` with the reason;
* a permit annotated ``@obligation("approval")`` allows only when the context carries an
  approval bound to this exact call (``context.approval.call_digest == context.call_digest``);
  otherwise the answer is ``approval_required``;
* every policy carries a unique ``@id``; decisions name the determining policies by it. The
  shipped defaults use ids starting with ``tether.``, which operators' policies may not use.
"""

from __future__ import annotations

from typing import Protocol

from tether.policy.models import Decision, DecisionRequest

__all__ = ["APPROVAL", "OBLIGATIONS", "RESERVED_PREFIX", "CompiledPolicies", "PolicyEngine"]

#: The obligation a permit can carry: the call needs a human's approval bound to it.
APPROVAL = "approval"
OBLIGATIONS = frozenset({APPROVAL})
#: Policy ids of the shipped defaults start with this; operators' ids may not.
RESERVED_PREFIX = "tether."


class CompiledPolicies(Protocol):
    """A parsed, validated policy set (defaults + one operators' version), ready to decide."""

    @property
    def version(self) -> int | None:
        """The operators' version it holds; ``None`` for the defaults alone."""
        ...

    @property
    def policy_ids(self) -> tuple[str, ...]:
        """Every policy's ``@id``, defaults first."""
        ...

    def with_version(self, version: int | None) -> CompiledPolicies:
        """The same compiled policies, labelled with the version they were stored as."""
        ...


class PolicyEngine(Protocol):
    def check(self, text: str) -> list[str]:
        """Everything wrong with an operators' policy set (empty: it may be applied)."""
        ...

    def compile(self, text: str, *, version: int | None) -> CompiledPolicies:
        """Parse and validate once; ``InvalidPolicySet`` with every error otherwise."""
        ...

    def decide(self, compiled: CompiledPolicies, request: DecisionRequest) -> Decision:
        """Never raises for a bad request: a request the engine cannot evaluate is a deny."""
        ...
