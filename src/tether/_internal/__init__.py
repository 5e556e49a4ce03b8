"""Internal helpers (clock, ids). No stability promise: import them only inside Tether."""
