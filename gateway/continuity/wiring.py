"""Building the continuity side from the configuration: probes, the organic signal fed by the
queue manager, the alerter, and the controller. Used by gateway.app only. Held mail is filed into
continuity mailboxes (qmgr.filer) on either spool backend, in the hold's own transaction."""
from __future__ import annotations

import asyncio

from gateway.config import Config
from gateway.continuity import filing
from gateway.continuity.alerts import Alerter
from gateway.continuity.controller import ContinuityController
from gateway.health import (HttpProbe, OrganicSignal, ProbeMailbox, ProbeRunner, RoundTripProbe,
                            SmtpInboundProbe, mx_hosts)
from gateway.router import Router
from policies.directory import Directory
from gateway.retry import FaultLog
from spool import Spool


def build(cfg: Config, spool: Spool, qmgr, resolver, log, directory=None,
          mailbox: ProbeMailbox | None = None) -> tuple[ContinuityController, ProbeRunner]:
    """``directory()`` returns (policies.directory.Directory, filtering enabled) for filing held
    mail into continuity mailboxes (groups expanded); None files each recipient as itself.
    ``mailbox`` (the ProbeMailbox shared with intake) runs the round-trip probe."""
    p, r = cfg.probes, cfg.routing
    organic = OrganicSignal(p.organic_window, p.organic_min_events)
    qmgr.on_smarthost_outcome = lambda ok, conn_fail, code: organic.record(
        ok, connection_failure=conn_fail, code=code)
    probes = []
    if p.smtp:
        hop = Router(cfg).for_domain(cfg.relay.accepted_domains[0] if cfg.relay.accepted_domains else "")
        canary = p.canary_rcpt or f"postmaster@{cfg.relay.accepted_domains[0]}"
        probes.append(SmtpInboundProbe(
            f"smtp:{hop.spec}", mx_hosts(resolver, hop.spec, hop.port), canary_rcpt=canary,
            mail_from=f"probe@{cfg.server.hostname}", helo=cfg.server.hostname,
            tls=r.smarthost_tls, verify_tls=r.smarthost_verify_tls, interval=p.smtp_interval,
            timeout=p.smtp_timeout,
            ca_file=str(r.smarthost_ca_file) if r.smarthost_ca_file else None))
    if p.roundtrip and mailbox is not None:
        probes.append(roundtrip_probe(cfg, resolver, mailbox))
    for name, url in p.http.items():
        probes.append(HttpProbe(f"http:{name}", url, interval=p.http_interval, timeout=p.http_timeout,
                                verify_tls=p.http_verify_tls))

    def keep(result) -> None:
        log.info("probe", probe=result.probe, ok=result.ok, latency=round(result.latency, 4),
                 detail=result.detail[:200])
        spool_write(result)

    writes: set[asyncio.Task] = set()   # the loop keeps only weak references to tasks
    write_faults = FaultLog(log, "probe_record_failed")   # a full disk: logged once, not per probe

    def written(task: asyncio.Task) -> None:
        writes.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            write_faults.failed(task.exception())
        else:
            write_faults.recovered()

    def spool_write(result) -> None:
        task = asyncio.get_running_loop().create_task(spool.record_probe(
            result.probe, result.ok, result.at, result.latency, result.detail, result.critical))
        writes.add(task)
        task.add_done_callback(written)

    runner = ProbeRunner(probes, on_result=keep)
    alerter = Alerter(urls=cfg.continuity.alert_urls, mail_to=cfg.continuity.alert_mail_to,
                      spool=spool, hostname=cfg.server.hostname, log=log, on_queued=qmgr.notify)

    def evidence():
        out = list(runner.latest().values())
        snap = organic.snapshot()
        if snap is not None:
            out.append(snap)
        return out

    controller = ContinuityController(cfg, spool, qmgr, evidence, alerter, log)

    async def filer(msg, held: list[str]):
        d, filtering = directory() if directory is not None else (Directory.empty(), False)
        return await asyncio.to_thread(
            filing.prepare, queue_id=msg.queue_id, data=msg.data, envelope_from=msg.mail_from,
            rcpts=held, directory=d, filtering=filtering,
            event_id=controller.state.event_id or controller.drill.drill_id)

    qmgr.filer = filer      # held mail is filed into continuity mailboxes on either backend
    return controller, runner


def roundtrip_probe(cfg: Config, resolver, mailbox: ProbeMailbox) -> RoundTripProbe:
    """Submit where delivery sends mail for the canary's domain unless roundtrip_submit says
    otherwise (an authenticated submission endpoint: [host]:587 with a username)."""
    p, r = cfg.probes, cfg.routing
    hop = Router(cfg).for_domain(p.roundtrip_to.rpartition("@")[2])
    spec, port = (p.roundtrip_submit, r.smarthost_port) if p.roundtrip_submit else (hop.spec, hop.port)
    return RoundTripProbe(
        "roundtrip", mx_hosts(resolver, spec, port), mailbox, rcpt=p.roundtrip_to,
        helo=cfg.server.hostname, deadline=p.roundtrip_deadline, interval=p.roundtrip_interval,
        critical=p.roundtrip_critical, tls=r.smarthost_tls, verify_tls=r.smarthost_verify_tls,
        ca_file=str(r.smarthost_ca_file) if r.smarthost_ca_file else None,
        username=p.roundtrip_username, password=p.roundtrip_password)
