"""What the webmail's handlers need from the running gateway, in one object (``app.state.ctx``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class WebmailContext:
    """``cfg``: gateway.config.Config; ``spool``: spool.store.Spool; ``directory()`` returns
    (policies.directory.Directory, filtering enabled); ``continuity()`` returns the continuity
    state as a dict (``mode``: normal | degraded | continuity | recovering, ``since``, ``event_id``,
    ...) or None when the engine is off; ``notify()`` wakes the queue manager after a commit;
    ``log``: the gateway's structlog logger; ``form_secret``: the key of the pre-login form tokens
    (the spool's shared_secret("webmail-pre"): the same on every process and node, so a form one
    node served is accepted by another; empty: a random key of this process)."""

    cfg: Any
    spool: Any
    directory: Callable[[], tuple[Any, bool]]
    continuity: Callable[[], dict | None] = lambda: None
    notify: Callable[[], None] = lambda: None
    log: Any = None
    extra: dict = field(default_factory=dict)   # per-feature state (rate limiters, hash semaphore)
    # for the admin console (webmail.admin): the gateway's live objects, None when off
    controller: Any = None         # gateway.continuity.engine controller (status(), command())
    runner: Any = None             # gateway.health probe runner (latest(), history())
    qmgr: Any = None               # gateway.delivery queue manager
    admin_token: str = ""          # [admin] token: may be exchanged for an admin session
    form_secret: bytes = b""       # 32 bytes (see above)

    @property
    def public_url(self) -> str:
        """Base URL users reach the webmail at, without a trailing slash."""
        w = self.cfg.webmail
        if w.public_url:
            return w.public_url.rstrip("/")
        scheme = "https" if w.tls_cert else "http"
        return f"{scheme}://{w.listen}"

    @property
    def secure(self) -> bool:
        """True when the webmail is reached over HTTPS (directly or through a TLS proxy):
        cookies then carry ``Secure`` and the ``__Host-`` prefix."""
        return self.public_url.startswith("https://")
