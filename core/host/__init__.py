"""advx.host."""
