"""Agent identity: the registry, instances, risk assessment, SVIDs and client authentication."""
