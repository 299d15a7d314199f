"""SMTP intake: the aiosmtpd server in our own loop, its policy hooks, and the replies it sends."""
from gateway.intake.server import IntakeServer

__all__ = ["IntakeServer"]
