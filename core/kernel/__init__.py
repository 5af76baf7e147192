"""advx.kernel."""
