"""advx.train."""
