"""Alerts to admins on a channel that does not depend on the broken mail system.

Two channels: apprise URLs (SMS gateways, Teams, Slack, generic webhooks: ``json://host/path``),
and mail to alternate addresses, queued in our own spool and delivered by our own outbound path
(MX of the alternate domain), never through the downstream Exchange. Rate-limited per alert key:
the same key is sent at most once per ``min_interval`` seconds (reminders use their own key),
measured on ``clock`` (monotonic: a wall-clock step neither repeats nor suppresses an alert);
``wall`` (unix seconds) stamps the ``sent`` record.
"""
from __future__ import annotations

import asyncio
import email.utils
import time

from spool import NewMessage, Spool


class Alerter:
    def __init__(self, *, urls: list[str], mail_to: list[str], spool: Spool, hostname: str, log,
                 on_queued=None, min_interval: float = 60.0, clock=time.monotonic, wall=time.time):
        self.urls, self.mail_to, self.spool, self.hostname = urls, mail_to, spool, hostname
        self.log, self.on_queued, self.min_interval, self.clock = log, on_queued, min_interval, clock
        self.wall = wall
        self._last: dict[str, float] = {}
        self.sent: list[tuple[float, str, str]] = []   # (unix seconds, key, title) of every alert sent
        self._apprise = None
        if urls:
            import apprise  # imported only when configured: it loads many plugins
            self._apprise = apprise.Apprise()
            for i, u in enumerate(urls):     # checked at load (config_checks.alert_url)
                if not self._apprise.add(u):
                    raise ValueError(f"continuity.alert_urls[{i}]: apprise cannot use this URL")

    async def send(self, key: str, title: str, body: str) -> bool:
        """Send on every channel unless ``key`` was sent less than min_interval ago. Never raises."""
        now = self.clock()
        if now - self._last.get(key, -1e18) < self.min_interval:
            return False
        self._last[key] = now
        self.sent.append((self.wall(), key, title))
        self.log.warning("alert", key=key, title=title)
        if self._apprise is not None:
            try:
                ok = await asyncio.to_thread(self._apprise.notify, body=body, title=title)
                if not ok:
                    self.log.error("alert_apprise_failed", key=key)
            except Exception as e:
                self.log.error("alert_apprise_failed", key=key, error=str(e))
        if self.mail_to:
            try:
                qid = await self.spool.commit(self._mail(title, body))
                self.log.info("alert_mail_queued", queue_id=qid, to=",".join(self.mail_to))
                if self.on_queued:
                    self.on_queued(qid)
            except Exception as e:
                self.log.error("alert_mail_failed", key=key, error=str(e))
        return True

    def _mail(self, title: str, body: str) -> NewMessage:
        sender = f"mailgate@{self.hostname}"
        head = (f"From: mailgate <{sender}>\r\nTo: {', '.join(self.mail_to)}\r\n"
                f"Subject: [mailgate] {title}\r\nDate: {email.utils.formatdate(usegmt=True)}\r\n"
                f"Message-ID: {email.utils.make_msgid(domain=self.hostname)}\r\n"
                "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
        text = body.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n"
        return NewMessage(mail_from=sender, rcpt_tos=tuple(self.mail_to), data=(head + text).encode(),
                          body_8bit=not text.isascii())
