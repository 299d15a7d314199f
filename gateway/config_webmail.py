"""The ``[webmail]`` section (and its ``[[webmail.dkim]]`` keys): the continuity webmail's
listener, sessions, login codes, sending limits and signing keys (docs/webmail*.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config_base import _Section, parse_listen


class DkimKey(_Section):
    domain: str                       # the d= domain (an accepted domain)
    selector: str                     # the s= selector (TXT at SELECTOR._domainkey.DOMAIN)
    key_file: Path                    # PEM RSA private key, or base64 Ed25519 seed (32 bytes)
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"   # RFC 6376, RFC 8463


class WebmailConfig(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:8080"    # host:port of the continuity webmail
    public_url: str = ""              # base URL users reach it at (links in login mail); empty:
    #   http://LISTEN
    available: Literal["always", "during_events"] = "always"   # "during_events": login only while
    #   a continuity event (or drill) is on; "always" lets users enrol and read before an outage
    tls_cert: Path | None = None      # PEM certificate chain: serve HTTPS on listen directly
    tls_key: Path | None = None       # PEM private key for tls_cert
    trusted_proxies: list[str] = []   # addresses of reverse proxies whose X-Forwarded-For and
    #   X-Forwarded-Proto are believed (client address for rate limits and audit)
    session_idle: float = Field(7 * 86400.0, gt=0)       # seconds of inactivity ending a session
    session_absolute: float = Field(30 * 86400.0, gt=0)  # seconds after login a session ends
    login_code_ttl: float = Field(600.0, gt=0)           # seconds a one-time login code is valid
    login_code_tries: int = Field(5, ge=1)               # wrong codes before a code is spent
    login_link_ttl: float = Field(86400.0, gt=0)         # seconds an admin-issued link is valid
    sms_url: str = ""                 # apprise URL for login codes by SMS; "{phone}" is replaced
    #   by the user's number (e.g. "twilio://SID:TOKEN@FROM/{phone}"); empty: no SMS codes
    max_concurrent_hashes: int = Field(2, ge=1)          # argon2 hashes computed at once
    sending: bool = True              # admin switch: False turns sending from the webmail off
    max_recipients: int = Field(50, ge=1)                # recipients per message
    max_messages_per_hour: int = Field(100, ge=1)        # messages a user sends per hour
    max_upload: int = Field(25 * 1024 * 1024, gt=0)      # bytes of attachments per message
    copy_sent_on_recovery: bool = False   # after an event, deliver a copy of each message a
    #   user sent from the webmail to their own Exchange mailbox
    dkim: list[DkimKey] = []          # signing keys for mail sent from the webmail

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @model_validator(mode="after")
    def _tls_pair(self):
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        return self


__all__ = ["DkimKey", "WebmailConfig"]
