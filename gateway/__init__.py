"""mailgate's gateway: SMTP intake, routing, delivery, the application supervisor and the CLI."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("mailgate")
except _metadata.PackageNotFoundError:     # run from a checkout that was never installed
    __version__ = "0+unknown"
