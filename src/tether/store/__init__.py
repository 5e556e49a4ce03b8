"""Persistence: ``interfaces`` (Protocols), ``memory`` (reference implementation), ``sql``."""
