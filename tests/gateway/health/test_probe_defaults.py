"""The probe classes' own defaults are the configuration's (gateway/config.py ProbesConfig), so
a probe built without an argument behaves as documented; and the continuity engine's Settings
defaults are ContinuityConfig's. The gateway passes every value explicitly (continuity/wiring.py),
so a drift would only show in code that builds a probe directly, and in its docstring."""
from __future__ import annotations

import inspect

import pytest

from gateway.config import ContinuityConfig, ProbesConfig
from gateway.continuity.engine import Settings
from gateway.health import HttpProbe, OrganicSignal, RoundTripProbe, SmtpInboundProbe

P = ProbesConfig()


def defaults(cls) -> dict[str, object]:
    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("cls,pairs", [
    (SmtpInboundProbe, {"interval": P.smtp_interval, "timeout": P.smtp_timeout}),
    (HttpProbe, {"interval": P.http_interval, "timeout": P.http_timeout, "verify_tls": P.http_verify_tls}),
    (RoundTripProbe, {"interval": P.roundtrip_interval, "deadline": P.roundtrip_deadline,
                      "critical": P.roundtrip_critical}),
    (OrganicSignal, {"window": P.organic_window, "min_events": P.organic_min_events}),
], ids=lambda v: getattr(v, "__name__", ""))
def test_probe_class_defaults_are_the_configuration_defaults(cls, pairs):
    got = defaults(cls)
    assert {k: got[k] for k in pairs} == pairs


def test_engine_settings_defaults_are_the_configuration_defaults():
    c = ContinuityConfig()
    assert (Settings().enter_after, Settings().hold_down) == (c.enter_after, c.hold_down)
