"""Admin console: the auth part (filled in by its own change)."""
from __future__ import annotations


def routes() -> list:
    """Routes of this part, relative to /admin."""
    return []
