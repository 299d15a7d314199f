"""What compose keeps and looks up beside its pages (webmail.compose_views): the attachments
of a failed send (KeptUploads, per node, in memory) and the user's own addresses, tenant and
address suggestions from the recipient directory (the tenant rule: see webmail.compose_views).
"""
from __future__ import annotations

import secrets
import time

from webmail.compose import Upload

SUGGESTIONS = 10


class KeptUploads:
    """Attachments of failed sends, kept in memory for KEEP_SECONDS under a random token bound
    to the user, so the re-shown form sends them without choosing the files again (a browser
    cannot refill a file input). At most KEEP_BYTES in all (oldest dropped first); lost on a
    restart (the form then lists the names to choose again)."""

    KEEP_SECONDS = 3600.0
    KEEP_BYTES = 256 * 1024 * 1024

    def __init__(self):
        self.items: dict[str, tuple[str, float, list[Upload]]] = {}

    def put(self, owner: str, uploads: list[Upload], now: float | None = None) -> str:
        now = time.time() if now is None else now
        self._expire(now)
        token = secrets.token_urlsafe(18)
        self.items[token] = (owner, now + self.KEEP_SECONDS, list(uploads))
        while sum(len(u.data) for _o, _t, us in self.items.values() for u in us) > self.KEEP_BYTES \
                and len(self.items) > 1:
            self.items.pop(next(iter(self.items)))
        return token

    def get(self, owner: str, token: str, now: float | None = None) -> list[Upload] | None:
        self._expire(time.time() if now is None else now)
        item = self.items.get(token)
        return list(item[2]) if item is not None and item[0] == owner else None

    def drop(self, owner: str, token: str) -> None:
        """Forget ``token`` if it is ``owner``'s (another user's token is left alone)."""
        item = self.items.get(token)
        if item is not None and item[0] == owner:
            del self.items[token]

    def _expire(self, now: float) -> None:
        for t in [t for t, (_o, until, _u) in self.items.items() if until < now]:
            del self.items[t]


def _kept(ctx) -> KeptUploads:
    return ctx.extra.setdefault("compose_kept_uploads", KeptUploads())


# -- the user's own addresses and tenant ----------------------------------------------------
class _Index:
    """What compose needs from one Directory, built once per loaded directory: every entry as
    (address, primary address) and each primary's aliases."""

    def __init__(self, directory):
        entries = list(getattr(directory, "_entries", {}).values())   # no public iterator
        self.rows = [(e.address, e.target if e.kind == "alias" else e.address) for e in entries]
        self.aliases: dict[str, list[str]] = {}
        for e in entries:
            if e.kind == "alias":
                self.aliases.setdefault(e.target, []).append(e.address)


def _index(ctx) -> _Index:
    directory, _enabled = ctx.directory()
    cached = ctx.extra.get("compose_index")
    if cached is None or cached[0] is not directory:
        cached = (directory, _Index(directory))
        ctx.extra["compose_index"] = cached
    return cached[1]


def own_addresses(ctx, user) -> list[str]:
    """The user's mailbox address first, then its aliases from the directory (mailbox keys)."""
    return [user.address, *(a for a in _index(ctx).aliases.get(user.address, []) if a != user.address)]


def tenant_domains(ctx, user) -> set[str]:
    """The domains of the user's own addresses (see the module doc: the tenant rule)."""
    return {a.rpartition("@")[2] for a in own_addresses(ctx, user)}


def suggestions(ctx, user, q: str, limit: int = SUGGESTIONS) -> list[str]:
    """Directory addresses (mailboxes, groups, contacts; aliases give their primary) in the
    user's tenant containing ``q`` (case-insensitive), those starting with it first, then
    shortest."""
    q = q.strip().casefold()
    if not q:
        return []
    domains = tenant_domains(ctx, user)
    found: dict[str, None] = {}
    for address, primary in _index(ctx).rows:
        if q in address and primary.rpartition("@")[2] in domains \
                and address.rpartition("@")[2] in domains:
            found.setdefault(primary)
    return sorted(found, key=lambda a: (not a.startswith(q), len(a), a))[:limit]


__all__ = ["SUGGESTIONS", "KeptUploads", "own_addresses", "suggestions", "tenant_domains"]
