"""advx.store."""
