"""Downstream health probes: can Exchange take mail, do its health pages answer.

Probes (each ``check()`` returns a ``ProbeResult`` and never raises):

    SmtpInboundProbe   RFC 5321 session without DATA to every smarthost host  critical
    HttpProbe          GET of an Exchange healthcheck.htm page                 informative
    OrganicSignal      outcomes of real deliveries over a sliding window       critical (not run
                       by the runner: the queue manager feeds it, the engine reads snapshot())
    RoundTripProbe     a token mail out through Exchange and back to intake    informative by
                       default; ProbeMailbox is where intake hands returning probes back

``ProbeRunner`` runs probes on their intervals and keeps their results; the continuity engine
(gateway/continuity) decides from them. See docs/health.md.
"""
from .http_probe import EXCHANGE_HEALTH_PATHS, HttpProbe
from .organic import OrganicSignal
from .result import Probe, ProbeResult
from .roundtrip_probe import ProbeMailbox, RoundTripProbe
from .runner import ProbeRunner
from .smtp_probe import SmtpInboundProbe, mx_hosts

__all__ = ["ProbeResult", "Probe", "SmtpInboundProbe", "mx_hosts", "HttpProbe",
           "EXCHANGE_HEALTH_PATHS", "OrganicSignal", "ProbeRunner", "RoundTripProbe", "ProbeMailbox"]
