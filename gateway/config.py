"""Configuration: one TOML file, validated at start-up into a typed object passed to every stage.

Every key has a default that runs as it is (SMTP on 127.0.0.1:2525, SQLite spool under ./data).
A bad value fails at start-up with ConfigError naming the file and the dotted key, e.g.
``deploy/mailgate.toml: smtp.max_recipients: Input should be greater than or equal to 100``.
The annotated example is ``deploy/mailgate.example.toml``. A list item is named by its index
(``continuity.alert_urls[1]``). Checks beyond a key's type (open-relay networks, apprise URLs,
backoff order, the round-trip return address against the directory) are in
``gateway/config_checks.py``.
"""
from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from gateway import config_checks as checks
from gateway.config_base import _Section, parse_listen
from gateway.config_webmail import DkimKey, WebmailConfig  # noqa: F401 (gateway.config.DkimKey)
from gateway.config_spool import SpoolConfig
from gateway.config_spool import across_keys as _spool_checks

from policies.rcpt_address import AddressError, normalize_domain


class ConfigError(Exception):
    """The configuration file cannot be read or a key has a bad value (message names both)."""


class ServerConfig(_Section):
    hostname: str = Field(default_factory=socket.getfqdn)  # our name in the banner, EHLO, Received:
    data_dir: Path = Path("data")                         # the spool lives here (spool.db)
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"   # gateway.eventloop
    #: SMTP intake processes (gateway.supervisor): "auto" (the default) = one per CPU of this
    #: machine (os.cpu_count()); N > 1 = N worker processes share the listeners; 1 = everything
    #: in this one process (also what "auto" gives on a one-CPU machine).
    workers: int | Literal["auto"] = "auto"

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v):
        if v == "auto" or (type(v) is int and 1 <= v <= 64):
            return v
        raise ValueError(f'must be "auto" or a number of processes from 1 to 64, not {v!r}')

    @property
    def worker_count(self) -> int:
        """``workers`` as a number ("auto": the CPUs of this machine, at least 1)."""
        return (os.cpu_count() or 1) if self.workers == "auto" else self.workers


class SmtpListener(_Section):
    """One ``[[smtp.listeners]]`` table: a listener with its own PROXY protocol settings
    (docs/cluster.md). ``proxy_protocol`` makes every connection start with a PROXY v1/v2
    header (HAProxy's send-proxy-v2), accepted only from ``proxy_trusted`` peers."""

    address: str                          # host:port, [v6]:port
    proxy_protocol: bool = False          # every connection starts with a PROXY v1/v2 header
    proxy_trusted: list[str] = []         # proxies (addresses, CIDRs) that may send that header
    proxy_timeout: float = Field(5.0, ge=3.0, le=300.0)   # seconds to wait for it (Postfix: 5 s)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("proxy_trusted")
    @classmethod
    def _trusted(cls, v: list[str]) -> list[str]:
        for cidr in v:
            checks.proxy_trusted(cidr)
        return v

    @model_validator(mode="after")
    def _needs_trusted(self) -> "SmtpListener":
        if self.proxy_protocol and not self.proxy_trusted:
            raise ValueError("proxy_protocol = true needs proxy_trusted (the addresses of the "
                             "proxies allowed to send the PROXY header)")
        if self.proxy_trusted and not self.proxy_protocol:
            raise ValueError("proxy_trusted is only used with proxy_protocol = true")
        return self


class SmtpConfig(_Section):
    listen: list[str] = ["127.0.0.1:2525"]   # host:port, [v6]:port
    listeners: list[SmtpListener] = []       # [[smtp.listeners]]: listeners with PROXY protocol
    max_message_size: int = Field(36 * 1024 * 1024, ge=1024)     # bytes, advertised as SIZE
    max_recipients: int = Field(1000, ge=100)                    # per message; 452 4.5.3 beyond
    max_connections: int = Field(500, ge=1)                      # all clients; 421 4.7.0 beyond
    max_connections_per_client: int = Field(50, ge=1)            # per client IP; 421 4.7.0 beyond
    max_concurrent_data: int = Field(32, ge=1)                   # DATA transfers buffered at once
    max_concurrent_data_per_client: int = Field(8, ge=1)         # of those, per client IP; more wait
    command_timeout: float = Field(300.0, gt=0)                  # seconds idle between commands
    data_timeout: float = Field(600.0, gt=0)                     # seconds for a whole DATA upload
    data_read_timeout: float = Field(300.0, gt=0)                # seconds without a byte in DATA → 421 4.4.2
    min_data_rate: float = Field(500.0, ge=0)                    # bytes/s average in DATA, 0: off → 421 4.4.2
    min_data_rate_grace: float = Field(180.0, gt=0)              # seconds after 354 before the rate counts
    hard_error_limit: int = Field(20, ge=1)                      # errors in a session → 421 4.7.0, close
    junk_command_limit: int = Field(100, ge=0)                   # NOOP/RSET/VRFY/EXPN/HELP; beyond: errors
    max_line_length: int = Field(65536, ge=1001)                 # bytes; longer lines get 500 5.5.2
    tls_cert: Path | None = None                                 # PEM; enables STARTTLS
    tls_key: Path | None = None
    require_tls: bool = False                                    # 530 5.7.0 before STARTTLS
    pipelining: bool = True                                      # advertise PIPELINING (RFC 2920)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
        for spec in v:
            parse_listen(spec)      # a bad address fails here, not as a traceback at bind time
        return v

    @model_validator(mode="after")
    def _one_listener_each(self) -> "SmtpConfig":
        seen: set[tuple[str, int]] = set()
        for spec in [*self.listen, *(lst.address for lst in self.listeners)]:
            host, port = parse_listen(spec)
            if port != 0 and (host, port) in seen:     # port 0: the system picks one each
                raise ValueError(f"listen address {spec!r} is given twice (smtp.listen and "
                                 "smtp.listeners together name each address once)")
            seen.add((host, port))
        if not seen:
            raise ValueError("no SMTP listener: set smtp.listen or [[smtp.listeners]]")
        return self

    def all_listeners(self) -> list[SmtpListener]:
        """Every listener: each ``listen`` address (no PROXY protocol), then ``listeners``."""
        return [SmtpListener(address=spec) for spec in self.listen] + list(self.listeners)


class RelayConfig(_Section):
    accepted_domains: list[str] = ["example.com"]                # mail for these goes to the smarthost
    trusted_networks: list[Annotated[str, AfterValidator(checks.trusted_network)]] = []  # may relay
    #   to foreign domains (CIDR); a network wide enough to be an open relay is refused

    @field_validator("accepted_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        # The one normalisation (idna, UTS #46; U-labels) that RCPT, router and mailboxes use.
        out = []
        for d in v:
            try:
                out.append(normalize_domain(d))
            except AddressError as e:
                raise ValueError(f"not a valid domain: {d!r} ({e})") from None
        return list(dict.fromkeys(out))


class DirectoryConfig(_Section):
    file: Path | None = None         # JSON or CSV export of valid recipients; None: no filtering
    reload_interval: float = Field(5.0, gt=0)   # seconds between mtime checks


def _route_spec(v: str) -> str:
    """A smarthost route spec must parse (gateway.delivery.mx.parse_target) when the file is
    loaded: a typo fails the start naming the key, instead of every delivery at run time."""
    from gateway.delivery.mx import parse_target
    parse_target(v, 25)           # ValueError: "bad host in route 'x y'", "bad port '25x'", ...
    return v


class Route(_Section):
    domain: str                       # an accepted domain, or "*" for the default route
    smarthost: str                    # "name" (MX, then A/AAAA), "[host]:port", an IP literal

    _smarthost = field_validator("smarthost")(_route_spec)


class RoutingConfig(_Section):
    default_smarthost: str = "[127.0.0.1]:2526"   # for accepted domains without a route of their own
    routes: list[Route] = []
    smarthost_port: int = Field(25, ge=1, le=65535)     # port for smarthost names without one
    smarthost_tls: Literal["none", "opportunistic", "required"] = "opportunistic"
    smarthost_verify_tls: bool = True
    smarthost_ca_file: Path | None = None
    mx_port: int = Field(25, ge=1, le=65535)            # port for internet MX delivery (tests change it)
    mx_tls: Literal["none", "opportunistic", "required"] = "opportunistic"  # unverified, RFC 3207

    _default_smarthost = field_validator("default_smarthost")(_route_spec)


class DnsConfig(_Section):
    nameservers: list[str] = []       # empty: the system resolver
    port: int = Field(53, ge=1, le=65535)
    timeout: float = Field(2.0, gt=0)
    lifetime: float = Field(5.0, gt=0)


class DeliveryConfig(_Section):
    connect_timeout: float = Field(5.0, gt=0)          # seconds; short so a dead host costs little
    command_timeout: float = Field(300.0, gt=0)
    data_timeout: float = Field(600.0, gt=0)           # final reply after DATA
    max_concurrent: int = Field(100, ge=1)             # deliveries in flight, all destinations
    max_inflight_bytes: int = Field(256 << 20, ge=1)   # message bytes loaded by deliveries at once
    per_destination: int = Field(20, ge=1)             # connections per next-hop host
    recipients_per_delivery: int = Field(50, ge=1)
    dead_host_ttl: float = Field(60.0, ge=0)           # seconds a failed host is skipped
    minimal_backoff: float = Field(300.0, gt=0)
    maximal_backoff: float = Field(4000.0, gt=0)
    maximal_lifetime: float = Field(5 * 86400.0, gt=0)
    bounce_lifetime: float = Field(5 * 86400.0, gt=0)
    idle_connection_timeout: float = Field(10.0, ge=0)  # reuse window for an idle connection
    finished_retention: float = Field(7 * 86400.0, ge=0)  # seconds delivered/bounced records are kept
    claim_ttl: float = Field(60.0, ge=5, le=3600)     # seconds a claim on a message lasts unless
    #   renewed (every claim_ttl / 3); on a shared spool a dead node's mail waits at most this


class ProbesConfig(_Section):
    smtp: bool = True                                   # SMTP inbound probe of the smarthost hosts
    smtp_interval: float = Field(10.0, gt=0)            # seconds; with the defaults below a total
    smtp_timeout: float = Field(5.0, gt=0)              # failure starts an event within 10+5+40+1 = 56 s
    canary_rcpt: str = ""                               # default postmaster@<first accepted domain>
    http: dict[str, str] = {}                           # name -> URL of an Exchange healthcheck.htm
    http_interval: float = Field(60.0, gt=0)
    http_timeout: float = Field(10.0, gt=0)
    http_verify_tls: bool = True
    organic_window: float = Field(120.0, gt=0)          # seconds of real delivery outcomes
    organic_min_events: int = Field(5, ge=1)
    # synthetic round trip (docs/health.md): a token mail out through Exchange and back
    roundtrip: bool = False
    roundtrip_submit: str = ""           # "[host]:port" or a name; default: routing.default_smarthost
    roundtrip_to: str = ""               # the canary mailbox at Exchange that forwards back
    roundtrip_return: str = ""           # where it comes back; consumed by intake, never delivered
    roundtrip_interval: float = Field(300.0, gt=0)
    roundtrip_deadline: float = Field(120.0, gt=0)      # seconds from submission start to return
    roundtrip_critical: bool = False     # True: counts for "can Exchange take mail"
    roundtrip_username: str = ""         # AUTH on the submission endpoint (STARTTLS required)
    roundtrip_password: str = ""

    @model_validator(mode="after")
    def _roundtrip(self) -> "ProbesConfig":
        if self.roundtrip:
            for key in ("roundtrip_to", "roundtrip_return"):
                if "@" not in getattr(self, key):
                    raise ValueError(f"roundtrip = true needs {key} (an address), got "
                                     f"{getattr(self, key)!r}")
        if bool(self.roundtrip_username) != bool(self.roundtrip_password):
            raise ValueError("roundtrip_username and roundtrip_password go together")
        return self


class ContinuityConfig(_Section):
    mode: Literal["automatic", "alert-only", "off"] = "automatic"
    enter_after: float = Field(40.0, ge=0)     # seconds of continuous failure before an event
    hold_down: float = Field(300.0, ge=0)      # seconds of continuous health before it ends
    fresh_within: float = Field(180.0, gt=0)   # probe results older than this are ignored
    tick: float = Field(1.0, gt=0)             # seconds between decisions
    replay_rate: float = Field(50.0, gt=0)     # held messages released per second, at most
    replay_concurrency: int = Field(20, ge=1)  # released messages in flight at once
    alert_urls: list[Annotated[str, AfterValidator(checks.alert_url)]] = []  # apprise URLs (SMS
    #   gateway, Teams, Slack, webhook); one apprise cannot use is refused without its secrets
    alert_mail_to: list[str] = []              # alternate addresses outside the accepted domains
    alert_repeat: float = Field(1800.0, gt=0)  # seconds between reminders while an event lasts
    mailbox_retention: float = Field(30 * 86400.0, gt=0)  # seconds continuity mailboxes are kept
    command_ttl: float = Field(300.0, gt=0)    # seconds a queued admin command stays valid
    journal: Literal["all", "held"] = "all"    # "all": every message delivered to a local mailbox
    #   is also filed into its continuity mailbox (kept mailbox_retention), so users see mail from
    #   before an outage; "held": only mail held during an event is filed
    drill_recipients: list[str] = []           # `mailgate drill` without --rcpt: addresses in an
    #   accepted domain whose mail (only theirs) a drill holds, files and replays
    drill_max_duration: float = Field(900.0, gt=0)   # seconds after which the gateway ends a drill
    #   nobody ended (the CLI was killed): its held mail is replayed

    @field_validator("drill_recipients")
    @classmethod
    def _drill_recipients(cls, v: list[str]) -> list[str]:
        for i, a in enumerate(v):
            checks.drill_recipient(a, f"entry {i}")
        return v


class AdminConfig(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:8025"    # host:port of the admin HTTP API, /healthz and /metrics
    token: str = ""                   # bearer token for /api/*; empty: /api/* answers 503
    alert_link_ttl: float = Field(3600.0, gt=0)   # seconds an alert's decision link (to the
    #   admin console's confirm page) stays valid; it works once

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "kv"] = "kv"


class Config(_Section):
    server: ServerConfig = ServerConfig()
    smtp: SmtpConfig = SmtpConfig()
    relay: RelayConfig = RelayConfig()
    directory: DirectoryConfig = DirectoryConfig()
    routing: RoutingConfig = RoutingConfig()
    dns: DnsConfig = DnsConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    probes: ProbesConfig = ProbesConfig()
    continuity: ContinuityConfig = ContinuityConfig()
    admin: AdminConfig = AdminConfig()
    webmail: WebmailConfig = WebmailConfig()
    log: LogConfig = LogConfig()
    spool: SpoolConfig = SpoolConfig()
    source: str = "<defaults>"        # the file this came from (set by load())

    @property
    def spool_path(self) -> Path:
        return self.server.data_dir / "spool.db"


def load(path: str | Path | None, *, check_files: bool = True) -> Config:
    """Read and validate ``path`` (None: embedded defaults). Relative paths in the file are
    resolved against the file's directory. Raises ConfigError naming the file and key.
    ``check_files`` also checks keys against the files they name (config_checks.with_files:
    the round-trip return address against the directory); the queue and status commands skip
    it, so they keep working on a gateway whose directory changed under it."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    cfg = parse(raw, str(path), base=path.parent)
    if check_files:
        _raise_errors(cfg.source, checks.with_files(cfg))
    return cfg


def parse(raw: dict, source: str, base: Path | None = None) -> Config:
    """Validate an already-parsed TOML mapping; see load()."""
    try:
        cfg = Config.model_validate({**raw, "source": source})
    except ValidationError as e:
        _raise_errors(source, [(checks.dotted(err["loc"]), err["msg"]) for err in e.errors()])
    _raise_errors(source, checks.across_keys(cfg) + _spool_checks(cfg))
    return _resolve_paths(cfg, base) if base is not None else cfg


def _raise_errors(source: str, errors: list[tuple[str, str]]) -> None:
    """ConfigError with one ``FILE: KEY: MESSAGE`` line per (key, message), if any."""
    if errors:
        raise ConfigError("\n".join(f"{source}: {key}: {msg}" for key, msg in errors)) from None


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p)

    return cfg.model_copy(update={
        "server": cfg.server.model_copy(update={"data_dir": fix(cfg.server.data_dir)}),
        "smtp": cfg.smtp.model_copy(update={"tls_cert": fix(cfg.smtp.tls_cert), "tls_key": fix(cfg.smtp.tls_key)}),
        "directory": cfg.directory.model_copy(update={"file": fix(cfg.directory.file)}),
        "routing": cfg.routing.model_copy(update={"smarthost_ca_file": fix(cfg.routing.smarthost_ca_file)}),
        "webmail": cfg.webmail.model_copy(update={
            "tls_cert": fix(cfg.webmail.tls_cert), "tls_key": fix(cfg.webmail.tls_key),
            "dkim": [k.model_copy(update={"key_file": fix(k.key_file)}) for k in cfg.webmail.dkim]}),
    })
