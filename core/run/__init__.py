"""advx.run."""
