"""What every configuration section shares: the pydantic base (unknown keys refused, frozen) and
the ``host:port`` parser. Imported by gateway/config.py and its section modules."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


def parse_listen(spec: str) -> tuple[str, int]:
    """"127.0.0.1:2525" / "[::1]:25" → (host, port). Raises ValueError."""
    host, _, port = spec.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"listen address must be host:port, got {spec!r}")
    return host, int(port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


__all__ = ["_Section", "parse_listen"]
