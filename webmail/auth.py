"""Login logic of the webmail, with no HTTP in it: who is a user, password hashing (argon2id,
bounded and off the event loop), rate limits, login codes and their delivery, TOTP, and the
pre-session (login CSRF) token. Routes are in webmail.auth_views; the CLI (gateway/cli_users.py)
uses the same rules.

Nothing here asks Exchange, AD or an IdP: a user is a mailbox of the on-disk recipient directory
(or, with no directory, an address in an accepted domain an admin gave an account), and every
secret is checked against the spool database. See docs/webmail-auth.md.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import time
import unicodedata
from collections import deque
from email.utils import format_datetime, make_msgid

from policies.rcpt_address import AddressError, normalize_domain, parse_rcpt, to_ascii_domain

MAX_ADDRESS = 254            # octets of an addr-spec (RFC 5321 §4.5.3.1.3)
MIN_PASSWORD = 10            # characters
MAX_PASSWORD = 1024          # characters: argon2 hashes any length, the form field does not need more
CODE_DIGITS = 8              # a login code: 10^8 values, 5 tries (login_code_tries) each
MFA_TTL = 300.0              # seconds between the first factor and the TOTP code
MFA_TRIES = 5                # wrong TOTP codes before the pending login is spent
TOTP_WINDOW = 1              # time steps (30 s) accepted either side of now


# -- who is a user ------------------------------------------------------------------------------
def clean_address(raw: object) -> str | None:
    """The mailbox key of a typed login address, or None if it is not an address: at most
    MAX_ADDRESS characters after trimming, no control or format characters, RFC 5321 syntax."""
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text or len(text) > MAX_ADDRESS or "@" not in text:
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        return None
    try:
        box = parse_rcpt(text)
    except AddressError:
        return None
    if not box.domain or box.routed or box.domain.startswith("["):
        return None
    return box.key


def accepted_domains(cfg) -> frozenset[str]:
    return frozenset(cfg.relay.accepted_domains)


def resolve_user(cfg, directory, filtering: bool, key: str | None):
    """(account key, directory entry or None) for a login address key, or None if it names no
    user: with a directory, a mailbox (an alias resolves to its mailbox; groups and contacts are
    not users); without one, any address in an accepted domain (an admin creates its account)."""
    if key is None:
        return None
    if filtering:
        entry = directory.lookup(key)
        if entry is None or entry.kind != "mailbox":
            return None
        return entry.address, entry
    domain = key.rpartition("@")[2]
    return (key, None) if domain in accepted_domains(cfg) else None


def is_outside(cfg, directory, address: str) -> bool:
    """True if ``address`` is a usable alternate address: it parses and its domain is neither an
    accepted domain nor a domain of the directory (a code must never go to the mailbox that is
    down, nor through Exchange)."""
    try:
        box = parse_rcpt(address)
    except AddressError:
        return False
    if not box.domain or box.domain.startswith("["):
        return False
    return box.domain not in accepted_domains(cfg) and box.domain not in directory.domains


def contacts(account: dict | None, entry) -> tuple[str, str]:
    """(alternate address, phone) of a user: the account's own (set by `mailgate users
    import-contacts`) first, else the directory's (otherMails, mobile)."""
    alt = (account or {}).get("alt_email") or (entry.alt_email if entry is not None else "")
    phone = (account or {}).get("phone") or (entry.phone if entry is not None else "")
    return alt, phone


def normalize_phone(raw: str) -> str | None:
    """``+44 1632 960961`` → ``+441632960961``; None unless it is + and 6 to 15 digits (E.164)."""
    digits = "".join(ch for ch in raw if ch not in " .-()/")
    if not digits.startswith("+") or not digits[1:].isdigit() or not 6 <= len(digits) - 1 <= 15:
        return None
    return digits


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be used, or None."""
    if len(password) < MIN_PASSWORD:
        return f"The password must have at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"The password must have at most {MAX_PASSWORD} characters."
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        return "The password cannot contain control characters."
    return None


def base_url(cfg) -> str:
    """Base URL users reach the webmail at (webmail.context.WebmailContext.public_url)."""
    w = cfg.webmail
    if w.public_url:
        return w.public_url.rstrip("/")
    return f"{'https' if w.tls_cert else 'http'}://{w.listen}"


def open_now(cfg, state: dict | None) -> bool:
    """May users log in now? ``[webmail] available = "during_events"`` opens login only while
    the continuity mode is continuity or recovering, or a drill runs (``state["drill"]``, from
    ContinuityController.status: the drill recipients must be able to read their held mail);
    "always" always."""
    if cfg.webmail.available == "always":
        return True
    state = state or {}
    return state.get("mode") in ("continuity", "recovering") or bool(state.get("drill"))


# -- password hashing ---------------------------------------------------------------------------
def hash_password(password: str) -> str:
    """argon2id PHC string (argon2-cffi PasswordHasher defaults: 64 MiB, t=3, p=4). Blocking,
    about 0.2 s: call it off the event loop."""
    from argon2 import PasswordHasher
    return PasswordHasher().hash(password)


def _verify(stored: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
    try:
        return PasswordHasher().verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class Busy(Exception):
    """More hashes are waiting than Hasher accepts (a flood from many addresses)."""


class Hasher:
    """argon2id off the event loop (asyncio.to_thread), at most ``limit`` at once and at most
    ``QUEUE_PER_SLOT * limit`` waiting (more: Busy, at once). An unknown user, or one without a
    password, is checked against a dummy hash so that every attempt costs one hash (same timing).
    """

    QUEUE_PER_SLOT = 8

    def __init__(self, limit: int):
        self._sem = asyncio.Semaphore(limit)
        self._limit = limit
        self._dummy: str | None = None
        self.waiting = 0
        self.computed = 0          # hashes computed (for the log)

    async def _slot(self):
        if self.waiting >= self.QUEUE_PER_SLOT * self._limit:
            raise Busy()
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1

    async def verify(self, stored: str, password: str) -> bool:
        """True if ``password`` matches the PHC string ``stored`` ("" never matches). Raises Busy."""
        await self._slot()
        try:
            if self._dummy is None:
                self._dummy = await asyncio.to_thread(hash_password, secrets.token_urlsafe(16))
            self.computed += 1
            ok = await asyncio.to_thread(_verify, stored or self._dummy, password)
            return ok and bool(stored)
        finally:
            self._sem.release()

    async def hash(self, password: str) -> str:
        """The argon2id PHC string of ``password``. Raises Busy."""
        await self._slot()
        try:
            self.computed += 1
            return await asyncio.to_thread(hash_password, password)
        finally:
            self._sem.release()


# -- rate limits --------------------------------------------------------------------------------
#: (window seconds, limits for the narrow, middle and wide prefix) per client address, as mox:
#: IPv4 /32, /26, /21 and IPv6 /64, /48, /32.
IP_LIMITS = ((60.0, (10, 30, 90)), (86400.0, (50, 150, 450)))
IP_PREFIXES = {4: (32, 26, 21), 6: (64, 48, 32)}
#: per account (the typed address, known or not): failures per window
ACCOUNT_LIMITS = ((60.0, 10), (3600.0, 30), (86400.0, 100))
#: login codes sent per account (known or not) per window
CODE_SEND_LIMITS = ((600.0, 3), (86400.0, 10))


def ip_buckets(client: str) -> list[tuple[int, str]]:
    """[(level, prefix)] of ``client``: its /32, /26, /21 (IPv4) or /64, /48, /32 (IPv6)."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return [(0, f"other:{client[:100]}")]
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return [(level, str(ipaddress.ip_network(f"{ip}/{bits}", strict=False)))
            for level, bits in enumerate(IP_PREFIXES[ip.version])]


class RateLimiter:
    """Sliding-window counters (a log of reservation times per key and window, at most ``limit``
    entries each): ``take(keys)`` reserves one unit under every key if none has ``limit``
    reservations within its last ``window`` seconds, and returns the reservation, else None;
    ``give_back`` cancels a reservation (a successful login does not count as a failure). A
    sliding window, not fixed ones: ten failures just before a minute boundary still block the
    eleventh just after it. In memory: a restart resets the counters (documented)."""

    MAX_KEYS = 200_000     # past it, the counters start again (bounded memory under a flood)

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._log: dict[tuple[str, float], deque] = {}
        self._swept = 0.0

    def take(self, keys: list[tuple[str, float, int]]) -> list[tuple] | None:
        """``keys``: [(key, window seconds, limit)]. Returns the reserved slots or None."""
        now = self._clock()
        self._sweep(now)
        for key, window, limit in keys:
            q = self._log.get((key, window))
            if q is None:
                continue
            while q and q[0] <= now - window:
                q.popleft()
            if len(q) >= limit:
                return None
        slots = []
        for key, window, _ in keys:
            self._log.setdefault((key, window), deque()).append(now)
            slots.append((key, window, now))
        return slots

    def give_back(self, slots: list[tuple] | None) -> None:
        for key, window, at in slots or ():
            q = self._log.get((key, window))
            if q:
                try:
                    q.remove(at)
                except ValueError:
                    pass

    def _sweep(self, now: float) -> None:
        if len(self._log) > self.MAX_KEYS:
            self._log.clear()
        if now - self._swept < 60.0:
            return
        self._swept = now
        for k in [k for k, q in self._log.items() if not q or q[-1] <= now - k[1]]:
            del self._log[k]


def ip_keys(scope: str, client: str) -> list[tuple[str, float, int]]:
    return [(f"{scope}:ip:{prefix}", window, limits[level])
            for level, prefix in ip_buckets(client) for window, limits in IP_LIMITS]


def account_keys(scope: str, address: str, limits=ACCOUNT_LIMITS) -> list[tuple[str, float, int]]:
    return [(f"{scope}:acct:{address}", window, limit) for window, limit in limits]


# -- the pre-session token (login CSRF) ---------------------------------------------------------
def pre_token(secret: bytes, cookie: str) -> str:
    """The form field that goes with pre-session cookie value ``cookie``: HMAC-SHA256 under the
    process's secret (a signed double-submit token)."""
    return hmac.new(secret, b"pre\0" + cookie.encode(), hashlib.sha256).hexdigest()


def pre_ok(secret: bytes, cookie: str | None, field: object) -> bool:
    if not cookie or not isinstance(field, str) or len(cookie) > 100:
        return False
    return hmac.compare_digest(pre_token(secret, cookie), field)


# -- login codes --------------------------------------------------------------------------------
def new_code() -> str:
    """CODE_DIGITS random decimal digits (secrets.randbelow)."""
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def clean_code(raw: object) -> str | None:
    """A typed code with spaces and dashes removed, or None unless it is CODE_DIGITS digits."""
    if not isinstance(raw, str) or len(raw) > 40:
        return None
    code = "".join(ch for ch in raw if ch not in " -\t")
    return code if len(code) == CODE_DIGITS and code.isascii() and code.isdigit() else None


def code_message(*, user: str, to: str, code: str, ttl: float, url: str, client: str) -> tuple[str, bytes]:
    """(envelope sender, message bytes with CRLF) carrying a login code to ``to``, from
    postmaster of the user's own domain (RFC 3834 Auto-Submitted)."""
    domain = to_ascii_domain(user.rpartition("@")[2])
    sender = f"postmaster@{domain}"
    minutes = max(1, int(ttl // 60))
    shown = f"{code[:4]} {code[4:]}"
    body = (f"Your login code for the continuity webmail of {user} is:\r\n\r\n    {shown}\r\n\r\n"
            f"It is valid for {minutes} minutes and works once. Enter it at {url}/login/code\r\n\r\n"
            f"Someone asked for it from {client or 'an unknown address'}. If it was not you, ignore "
            f"this message: nobody can log in without the code.\r\n")
    headers = [
        f"From: Continuity webmail <{sender}>",
        f"To: <{to}>",
        "Subject: Your webmail login code",
        f"Date: {format_datetime(dt.datetime.now(dt.timezone.utc))}",
        f"Message-ID: {make_msgid(domain=domain)}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    return sender, ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def sms_text(code: str, ttl: float) -> str:
    return f"Webmail login code: {code[:4]} {code[4:]} (valid {max(1, int(ttl // 60))} min)"


async def send_sms(sms_url: str, phone: str, text: str) -> bool:
    """Send ``text`` through the apprise URL ``sms_url`` with ``{phone}`` replaced; True if
    apprise reports success. Runs apprise in a thread."""
    import apprise

    def go() -> bool:
        ap = apprise.Apprise()
        if not ap.add(sms_url.replace("{phone}", phone)):
            return False
        return bool(ap.notify(body=text, title=""))
    return await asyncio.to_thread(go)


# -- TOTP (RFC 6238) ----------------------------------------------------------------------------
def new_totp_secret() -> str:
    import pyotp
    return pyotp.random_base32()


def totp_uri(secret: str, address: str, issuer: str = "mailgate webmail") -> str:
    import pyotp
    return pyotp.TOTP(secret).provisioning_uri(name=address, issuer_name=issuer)


def totp_step(secret: str, code: object, last_step: int, now: float | None = None) -> int | None:
    """The time step ``code`` is valid for (within TOTP_WINDOW of now) if it is later than
    ``last_step`` (a code is accepted once), else None."""
    import pyotp
    if not isinstance(code, str):
        return None
    code = code.replace(" ", "").strip()
    if len(code) != 6 or not code.isascii() or not code.isdigit() or not secret:
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if now is None else now
    here = int(now // totp.interval)
    for step in range(here - TOTP_WINDOW, here + TOTP_WINDOW + 1):
        if step > last_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


__all__ = ["clean_address", "resolve_user", "is_outside", "contacts", "normalize_phone",
           "password_problem", "base_url", "open_now", "hash_password", "Busy", "Hasher", "RateLimiter",
           "ip_buckets", "ip_keys", "account_keys", "pre_token", "pre_ok", "new_code", "clean_code",
           "code_message", "sms_text", "send_sms", "new_totp_secret", "totp_uri", "totp_step",
           "normalize_domain"]
