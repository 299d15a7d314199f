"""Prometheus metrics read at scrape time from the live objects (no counting of our own):
continuity mode, probe results, queue depth per state, the queue manager's outcome counters and
replay progress. One dedicated CollectorRegistry per gateway (no prometheus_client globals).

Queue depth needs a spool read, which is async: the /metrics handler awaits ``refresh()`` and
then renders; ``collect()`` itself only reads memory. Reads no state it does not report; writes none.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.continuity.engine import Mode

__all__ = ["GatewayCollector", "build_registry", "render", "OUTCOMES"]

OUTCOMES = ("delivered", "deferred", "bounced", "held")   # per recipient, from qmgr.stats


class GatewayCollector(Collector):
    """Reads ``ctx`` (an AdminContext) when scraped; ``queue_counts`` is set by refresh()."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.queue_counts: dict[str, int] = {}
        self.journal_pending = 0

    async def refresh(self) -> None:
        self.queue_counts = await self.ctx.spool.counts()
        self.journal_pending = await self.ctx.spool.count_journal_pending()

    def collect(self):
        ctx = self.ctx
        q = GaugeMetricFamily("mailgate_queue_messages", "Messages in the spool per queue state",
                              labels=["state"])
        for state, n in sorted(self.queue_counts.items()):
            q.add_metric([state], n)
        yield q
        stats = ctx.qmgr.stats
        c = CounterMetricFamily("mailgate_recipients", "Recipient outcomes since start",
                                labels=["outcome"])
        for word in OUTCOMES:
            c.add_metric([word], stats.get(word, 0))
        yield c
        yield CounterMetricFamily("mailgate_dsn_sent", "Delivery status notifications queued since start",
                                  value=stats.get("dsn", 0))
        yield from self._claims(stats)
        yield from self._journal(stats)
        intake = getattr(ctx, "intake", None)
        if intake is not None:
            yield self._proxy_refused(intake.proxy_refused)
        if ctx.controller is not None:
            yield from self._continuity(ctx.controller.status())
        if ctx.runner is not None:
            yield from self._probes(ctx.runner.latest())

    @staticmethod
    def _claims(stats: dict):
        """Claims (issue 9): outcome writes refused because their claim was no longer current
        (another node or an operator had the message), claims whose renewal was refused, and
        other nodes' expired claims this node returned to the queue (a shared spool)."""
        yield CounterMetricFamily("mailgate_stale_claim_writes",
                                  "Delivery outcome writes refused since start because their "
                                  "claim token was no longer current (nothing was written)",
                                  value=stats.get("stale_claims", 0))
        yield CounterMetricFamily("mailgate_claims_lost",
                                  "Claims of deliveries in flight whose renewal was refused "
                                  "since start", value=stats.get("claims_lost", 0))
        yield CounterMetricFamily("mailgate_claims_expired_locally",
                                  "Claims given up since start because their local deadline "
                                  "passed before the delivery began (no session opened)",
                                  value=stats.get("claims_expired_locally", 0))
        yield CounterMetricFamily("mailgate_claims_requeued_messages",
                                  "Messages whose expired claim this node returned to the "
                                  "queue since start (a dead or paused node's deliveries)",
                                  value=stats.get("claims_requeued", 0))

    def _journal(self, stats: dict):
        """The journal (continuity.journal = "all"): messages filed at delivery, filings that
        failed (the delivery was still recorded), the indexer's backlog and its parse failures."""
        yield CounterMetricFamily("mailgate_journal_filed_messages",
                                  "Delivered messages filed into continuity mailboxes since start",
                                  value=stats.get("journaled", 0))
        yield CounterMetricFamily("mailgate_journal_failed_messages",
                                  "Delivered messages whose journal filing failed since start",
                                  value=stats.get("journal_failed", 0))
        yield GaugeMetricFamily("mailgate_journal_pending_messages",
                                "Continuity-mailbox entries (one per mailbox and message) waiting for the journal indexer: listed, not yet searchable",
                                value=self.journal_pending)
        keeper = getattr(self.ctx, "journal", None)
        if keeper is not None:
            yield CounterMetricFamily("mailgate_journal_index_failed_messages",
                                      "Filed messages the indexer could not parse since start",
                                      value=keeper.stats.get("index_failed", 0))

    @staticmethod
    def _proxy_refused(refused: dict):
        """Connections to PROXY-protocol listeners closed without a greeting, per reason
        (gateway.intake.proxy.REASONS: untrusted peer, header timeout, invalid, none)."""
        from gateway.intake.proxy import REASONS
        c = CounterMetricFamily("mailgate_proxy_refused_connections",
                                "Connections to PROXY protocol listeners closed without a "
                                "greeting since start, per reason", labels=["reason"])
        for reason in REASONS:
            c.add_metric([reason], refused.get(reason, 0))
        return c

    @staticmethod
    def _continuity(s: dict):
        g = GaugeMetricFamily("mailgate_continuity_state", "1 for the current continuity mode",
                              labels=["mode"])
        for m in Mode:
            g.add_metric([m.value], 1.0 if s["mode"] == m.value else 0.0)
        yield g
        yield GaugeMetricFamily("mailgate_continuity_awaiting_confirm",
                                "1 while an admin must confirm a continuity event",
                                value=1.0 if s["awaiting_confirm"] else 0.0)
        r = s["replay"]
        # names per Prometheus' conventions: the unit is the last word (test_metric_names.py)
        yield GaugeMetricFamily("mailgate_replay_released_messages",
                                "Held messages released in this replay", value=r["released"])
        yield GaugeMetricFamily("mailgate_replay_remaining_messages", "Held messages still to release",
                                value=r["remaining"])
        yield GaugeMetricFamily("mailgate_replay_rate_limit_messages_per_second",
                                "Current replay rate limit, messages per second", value=r["rate"])
        lead = s.get("leader")
        if lead is not None:       # a shared spool: the leader lease (issue 9 items 4 and 5)
            yield GaugeMetricFamily("mailgate_continuity_leader",
                                    "1 while this node holds the continuity lease",
                                    value=1.0 if lead["leading"] else 0.0)
            yield GaugeMetricFamily("mailgate_continuity_lease_epoch",
                                    "The epoch (fencing token) of this node's lease, 0 if none",
                                    value=lead["epoch"] or 0)
            yield CounterMetricFamily("mailgate_continuity_stepdowns",
                                      "Times this node lost its authority while leading since "
                                      "start (lease lost, paused, deadline, database error)",
                                      value=lead["stepdowns"])
            yield CounterMetricFamily("mailgate_fenced_writes_refused",
                                      "Writes fenced by the lease epoch that the database "
                                      "refused since start (nothing was written)",
                                      value=lead.get("fenced_refused", 0))

    @staticmethod
    def _probes(latest: dict):
        ok = GaugeMetricFamily("mailgate_probe_ok", "1 if the probe's last check passed",
                               labels=["probe", "critical"])
        lat = GaugeMetricFamily("mailgate_probe_latency_seconds", "Duration of the probe's last check",
                                labels=["probe"])
        at = GaugeMetricFamily("mailgate_probe_last_check_timestamp_seconds",
                               "When the probe's last check finished (unix time)", labels=["probe"])
        for name, r in sorted(latest.items()):
            ok.add_metric([name, "true" if r.critical else "false"], 1.0 if r.ok else 0.0)
            lat.add_metric([name], r.latency)
            at.add_metric([name], r.at)
        yield ok
        yield lat
        yield at


def build_registry(ctx) -> tuple[CollectorRegistry, GatewayCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = GatewayCollector(ctx)
    registry.register(collector)
    return registry, collector


async def render(registry: CollectorRegistry, collector: GatewayCollector) -> bytes:
    """Refresh the async-read values, then the Prometheus text exposition."""
    await collector.refresh()
    return generate_latest(registry)
