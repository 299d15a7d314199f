"""aiosmtpd's per-connection set-up, done once per listener instead of once per connection.

``aiosmtpd.smtp.SMTP.__init__`` runs for every connection and introspects the protocol and the
handler each time: ``inspect.getmembers()`` over both (to find ``auth_*`` methods, evaluating
every property), ``dir()`` of both (``handle_*`` hooks, ``smtp_*`` commands),
``inspect.signature()`` of the EHLO hook, and an "Available AUTH mechanisms" log line: about a
tenth of the event loop's time at 4 KiB × 50 sessions (bench/README.md). None of it depends on
the connection.

``Template`` keeps what the first connection's real ``SMTP.__init__`` produced and gives each
later connection the same attributes: plain values shared (they are never mutated per
connection: ints, strings, the TLS context, the handler's hook dict copied), methods bound to
the template re-bound to the new instance, and a fresh ``StreamReader``/``StreamReaderProtocol``
state from asyncio's own ``__init__``. A connection whose keyword arguments differ from the
template's gets aiosmtpd's full ``__init__``. ``tests/gateway/intake/test_fastinit.py``
compares the two instance dictionaries attribute by attribute, so an aiosmtpd upgrade that adds
state shows up there.
"""
from __future__ import annotations

import asyncio
import types
from typing import Any

from aiosmtpd.smtp import SMTP, make_loop


def _stream_protocol_keys() -> frozenset[str]:
    """The attributes asyncio.StreamReaderProtocol.__init__ sets (per connection state)."""
    loop = asyncio.new_event_loop()
    try:
        proto = asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop),
                                             client_connected_cb=lambda r, w: None, loop=loop)
        return frozenset(vars(proto))
    finally:
        loop.close()


_PER_CONNECTION = _stream_protocol_keys()


class Template:
    """The connection-independent attributes of one SMTP instance built by aiosmtpd (no
    reference to that instance is kept: methods bound to it are stored as functions)."""

    def __init__(self, proto: SMTP, handler: Any, kw: dict):
        self.handler, self.kw = handler, dict(kw)
        self.cls = type(proto)
        self.attrs: dict[str, Any] = {}
        self.methods: dict[str, Any] = {}         # name -> function (bound per instance)
        self.tables: dict[str, dict] = {}         # name -> {key: (kind, value)}
        for name, value in vars(proto).items():
            if name in _PER_CONNECTION:
                continue
            if _bound_to(value, proto):
                self.methods[name] = value.__func__
            elif isinstance(value, dict) and any(_entry(v, proto)[0] != "v" for v in value.values()):
                self.tables[name] = {k: _entry(v, proto) for k, v in value.items()}
            else:
                self.attrs[name] = value

    def fits(self, cls: type, handler: Any, kw: dict) -> bool:
        """True if an instance of ``cls`` for ``handler`` with ``kw`` would get these attributes."""
        return cls is self.cls and handler is self.handler and kw == self.kw

    def apply(self, proto: SMTP) -> None:
        """Give ``proto`` (uninitialised but for ``line_length_limit``) the state aiosmtpd's
        ``SMTP.__init__`` would: asyncio's StreamReaderProtocol set-up, then the shared values."""
        loop = self.kw.get("loop") or make_loop()
        asyncio.StreamReaderProtocol.__init__(
            proto, asyncio.StreamReader(loop=loop, limit=proto.line_length_limit),
            client_connected_cb=proto._cb_client_connected, loop=loop)   # noqa: SLF001
        d = vars(proto)
        fresh = set(d)                  # asyncio's per-connection state: never overwritten
        for name, value in self.attrs.items():
            if name not in fresh:
                d[name] = value.copy() if isinstance(value, (dict, list, set)) else value
        d["loop"] = loop
        bind = types.MethodType
        for name, func in self.methods.items():
            d[name] = bind(func, proto)
        for name, table in self.tables.items():
            d[name] = {k: (v if kind == "v" else bind(v, proto) if kind == "m"
                           else v[0]._replace(method=bind(v[1], proto)))
                       for k, (kind, v) in table.items()}


def _bound_to(value: Any, proto: Any) -> bool:
    return isinstance(value, types.MethodType) and value.__self__ is proto


def _entry(v: Any, proto: Any) -> tuple[str, Any]:
    """("m", function) for a method bound to ``proto``; ("a", (tuple, function)) for aiosmtpd's
    ``_AuthMechAttr(method, is_builtin)`` with such a method; else ("v", v)."""
    if _bound_to(v, proto):
        return "m", v.__func__
    if isinstance(v, tuple) and hasattr(v, "_replace") and _bound_to(getattr(v, "method", None), proto):
        return "a", (v._replace(method=None), v.method.__func__)
    return "v", v


_TEMPLATES: dict[int, Template] = {}


def init_smtp(proto: SMTP, handler: Any, kw: dict) -> None:
    """Initialise ``proto`` as ``SMTP.__init__(proto, handler, **kw)`` would, reusing the
    introspection of the first instance built with the same class, handler and ``kw``."""
    key = id(handler)
    tpl = _TEMPLATES.get(key)
    if tpl is not None and tpl.fits(type(proto), handler, kw):
        tpl.apply(proto)
        return
    SMTP.__init__(proto, handler, **kw)
    if tpl is None or tpl.handler is not handler:
        _TEMPLATES[key] = Template(proto, handler, kw)
