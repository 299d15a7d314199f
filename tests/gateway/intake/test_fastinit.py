"""aiosmtpd's per-connection set-up done once (gateway/intake/fastinit.py, issue 10 item 2): a
connection built from the template has the same state as one built by aiosmtpd's own
SMTP.__init__, methods bound to itself, and a fresh stream; the _getaddr override parses as
aiosmtpd's does."""
from __future__ import annotations

import asyncio
import types

import pytest
from aiosmtpd.smtp import SMTP

from gateway import config as config_mod
from gateway.intake import fastinit
from gateway.intake.limits import ConnectionLimits, DataSlots
from gateway.intake.server import GatewaySMTP, IntakeServer


class Handler:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        return responses

    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def _kw(tls=None):
    return dict(hostname="gw.test", ident="ESMTP mailgate", data_size_limit=1 << 20,
                enable_SMTPUTF8=True, decode_data=False, tls_context=tls, require_starttls=False,
                timeout=300, auth_require_tls=True)


def _norm(proto) -> dict:
    """The instance dict with bound methods as (function, bound to proto?) for comparison."""
    out = {}
    for k, v in vars(proto).items():
        if k in fastinit._PER_CONNECTION:
            continue
        out[k] = _norm_value(v, proto)
    return out


def _norm_value(v, proto):
    if isinstance(v, types.MethodType):
        return ("method", v.__func__, v.__self__ is proto or v.__self__)
    if isinstance(v, dict):
        return {k: _norm_value(x, proto) for k, x in v.items()}
    if isinstance(v, tuple) and hasattr(v, "_replace"):
        return tuple(_norm_value(x, proto) for x in v)
    return v


async def test_template_instance_equals_aiosmtpd_instance():
    handler, cfg = Handler(), config_mod.Config()
    limits, slots = ConnectionLimits(10, 10), DataSlots(4, 4)
    kw = _kw()
    first = GatewaySMTP(handler, limits=limits, data_slots=slots, smtp=cfg.smtp, **kw)
    second = GatewaySMTP(handler, limits=limits, data_slots=slots, smtp=cfg.smtp, **kw)
    reference = GatewaySMTP.__new__(GatewaySMTP)
    reference.line_length_limit = cfg.smtp.max_line_length
    SMTP.__init__(reference, handler, **kw)
    for k in ("_smtp", "_limits", "_data_slots", "_slot_ip", "_errors", "_junk", "_overshoot",
              "_closing", "_proxy", "_client_ip", "_proxy_ip", "_peer_ip", "_started",
              "_holds_total", "_proxy_outcome"):
        setattr(reference, k, getattr(second, k))
    assert _norm(second) == _norm(reference) == _norm(first)
    assert set(vars(second)) == set(vars(reference))
    # bound to the new instance, not the template; a fresh stream per connection
    assert second._smtp_methods["DATA"].__self__ is second
    assert second._smtp_methods["DATA"].__func__ is GatewaySMTP.smtp_DATA
    assert second._handle_hooks["DATA"].__self__ is handler
    assert second._stream_reader is not first._stream_reader
    assert second._stream_reader._limit == cfg.smtp.max_line_length
    assert second._handle_hooks is not first._handle_hooks
    assert second.loop is asyncio.get_running_loop()


async def test_different_arguments_get_aiosmtpd_init():
    handler, cfg = Handler(), config_mod.Config()
    limits, slots = ConnectionLimits(10, 10), DataSlots(4, 4)
    a = GatewaySMTP(handler, limits=limits, data_slots=slots, smtp=cfg.smtp, **_kw())
    kw = _kw()
    kw["hostname"] = "other.test"
    b = GatewaySMTP(handler, limits=limits, data_slots=slots, smtp=cfg.smtp, **kw)
    assert (a.hostname, b.hostname) == ("gw.test", "other.test")


@pytest.mark.parametrize("arg", [
    "<a@b.test>", "<a@b.test> SIZE=100", "a@b.test", "<>", "", "<\"q u\"@b.test>", "<@x:a@b.test>",
    "<a@b.test", "<<a@b.test>>", "<" + "x" * 70 + "@b.test>", "<a@[127.0.0.1]>", "<a@b.test>BODY",
    "<jörg@bücher.test>", "a",
])
async def test_getaddr_parses_as_aiosmtpd(arg):
    cfg = config_mod.Config()
    p = GatewaySMTP(Handler(), limits=ConnectionLimits(1, 1), data_slots=DataSlots(1, 1),
                    smtp=cfg.smtp, **_kw())
    assert p._getaddr(arg) == SMTP._getaddr(p, arg)


async def test_intake_server_protocols_share_one_template():
    cfg = config_mod.Config()
    server = IntakeServer(cfg, Handler())
    listener = cfg.smtp.all_listeners()[0]
    one, two = server._protocol(listener), server._protocol(listener)
    tpl = fastinit._TEMPLATES[id(server.handler)]
    assert tpl.fits(GatewaySMTP, server.handler, tpl.kw)
    assert one._smtp_methods["MAIL"].__self__ is one and two._smtp_methods["MAIL"].__self__ is two
