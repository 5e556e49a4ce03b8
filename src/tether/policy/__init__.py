"""The rule engine's domain: Cedar schema and policy sets (versioned), decisions, obligations.

Nothing here imports the Cedar binding except :mod:`tether.policy._cedar`, which the composition
root loads; the rest speaks in :class:`~tether.policy.models.Decision` and plain data.
"""
