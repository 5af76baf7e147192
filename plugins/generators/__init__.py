"""advx's built-in generative models (filled in by the generators work)."""

import advx  # noqa: F401
