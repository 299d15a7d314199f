"""The application supervisor: builds every stage from the configuration and runs them in one
asyncio loop (a TaskGroup), with one shutdown path. With ``server.workers`` > 1 the SMTP intake
runs in worker processes instead (gateway.supervisor.WorkerPool in place of the IntakeServer;
this process binds the listeners, recovers the spool first, and keeps everything else).

Start-up order: open the spool and run crash recovery (before any delivery), load the recipient
directory, bind the SMTP listeners, then start the queue manager. SIGTERM/SIGINT: stop accepting,
let sessions inside DATA finish their commit, let deliveries in flight finish (bounded), close the
spool. SIGHUP: reload the recipient directory now. No task's error ends the process: each
loop survives its own faults (gateway.retry), and a task that raises anyway is restarted.
"""
from __future__ import annotations

import asyncio
import signal

from gateway.config import Config
from gateway.delivery.mx import MxResolver
from gateway.delivery.qmgr import QueueManager
from gateway.delivery.transport import SmtpTransport
from gateway.health.roundtrip_probe import ProbeMailbox
from gateway.intake.handler import IntakeHandler
from gateway.intake.server import IntakeServer
from gateway.retry import FaultLog, supervise
from gateway.router import Router
from gateway.intake.directory import RcptContextSource, watch_directory as _watch_directory
from policies.directory import DirectoryWatcher
from gateway.config_spool import node_name
from gateway.spool_open import describe, open_spool


def build_resolver(cfg: Config) -> MxResolver:
    return MxResolver(cfg.dns.nameservers or None, cfg.dns.port, cfg.dns.timeout, cfg.dns.lifetime)


async def serve(cfg: Config, log, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set or SIGTERM/SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    if cfg.spool.backend == "postgresql":     # several nodes: every line names this one
        log = log.bind(node=node_name(cfg))
    for sig in (signal.SIGTERM, signal.SIGINT):     # also while waiting for PostgreSQL
        loop.add_signal_handler(sig, stop.set)
    try:
        spool = await open_spool(cfg, log, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if spool is None:
        log.info("stopped", reason="stopped while waiting for the spool", **describe(cfg))
        return
    log.info("spool_open", **describe(cfg), **spool.recovered)
    watcher = DirectoryWatcher(cfg.directory.file)
    if not watcher.enabled:
        log.warning("recipient_filtering_disabled",
                    hint="set directory.file: every local part of an accepted domain is accepted")
    else:
        log.info("directory_loaded", file=str(cfg.directory.file), entries=len(watcher.current))
    d = cfg.delivery
    transport = SmtpTransport(cfg.server.hostname, connect_timeout=d.connect_timeout,
                              command_timeout=d.command_timeout, data_timeout=d.data_timeout,
                              per_destination=d.per_destination, idle_timeout=d.idle_connection_timeout)
    qmgr = QueueManager(cfg, spool, Router(cfg), build_resolver(cfg), transport, log)
    controller = runner = None
    # returning round-trip probes are consumed by intake even with continuity off
    mailbox = (ProbeMailbox(cfg.probes.roundtrip_return, directory=lambda: watcher.current, log=log)
               if cfg.probes.roundtrip else None)   # disabled while the directory lists the address
    if cfg.continuity.mode != "off":
        from gateway.continuity import wiring
        controller, runner = wiring.build(cfg, spool, qmgr, qmgr.resolver, log,
                                          directory=lambda: (watcher.current, watcher.enabled),
                                          mailbox=mailbox)
        await controller.start()   # before delivery: a restart during an event keeps holding
    from gateway.continuity import journal   # continuity mailboxes: journal hook, index, retention
    keeper = journal.build(cfg, spool, qmgr, lambda: (watcher.current, watcher.enabled), log)
    if cfg.server.worker_count > 1:     # intake in worker processes (gateway.supervisor)
        from gateway.supervisor import WorkerPool, write_lock_path
        if cfg.spool.backend == "sqlite":
            spool.write_lock = write_lock_path(cfg)    # every writer of the file queues on it
        intake = WorkerPool(cfg, log, qmgr.notify, node_tag=getattr(spool, "node_tag", ""),
                            mailbox=mailbox)           # probe tokens to workers
    else:
        handler = IntakeHandler(cfg, spool, RcptContextSource(cfg, watcher), qmgr.notify, log,
                                probe_mailbox=mailbox)
        intake = IntakeServer(cfg, handler)
    bound = await intake.start()
    log.info("listening", addresses=[f"{h}:{p}" for h, p in bound], hostname=cfg.server.hostname)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reload_now = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(reload_now, intake))
    try:
        admin = _admin_server(cfg, spool, qmgr, intake, controller, runner, log, keeper)
        form_secret = await spool.shared_secret("webmail-pre") if cfg.webmail.enabled else b""
        webmail = _webmail_server(cfg, spool, qmgr, watcher, controller, log, runner, form_secret)
        async with asyncio.TaskGroup() as tg:
            # each long-running task handles its own faults; supervise() restarts one that
            # raises anyway, so no single task's exception ends the gateway (port 25 stays up)
            runner_task = tg.create_task(supervise("qmgr", qmgr.run, log), name="qmgr")
            if admin is not None:
                tg.create_task(admin.serve(), name="admin")
            if webmail is not None:
                tg.create_task(webmail.serve(), name="webmail")
            helpers = [tg.create_task(supervise("directory", lambda: _watch_directory(
                watcher, cfg.directory.reload_interval, log, reload_now), log), name="directory"),
                ]
            helpers.append(tg.create_task(supervise("journal", keeper.run, log), name="journal"))
            if spool.shared:      # `mailgate cluster status` shows each node's last heartbeat
                helpers.append(tg.create_task(supervise("heartbeat", lambda: _heartbeat(
                    spool, log), log), name="heartbeat"))
            if webmail is not None and cfg.webmail.copy_sent_on_recovery:
                from webmail import sent_copies
                helpers.append(tg.create_task(supervise("sent_copies", lambda: sent_copies.run(
                    webmail.ctx), log), name="sent_copies"))
            if controller is not None:
                helpers.append(tg.create_task(supervise("probes", runner.run, log), name="probes"))
                helpers.append(tg.create_task(supervise("continuity", controller.run, log),
                                              name="continuity"))
            await stop.wait()
            log.info("shutting_down")
            await intake.stop()
            if admin is not None:
                admin.stop()       # open HTTP requests finish (bounded); before the spool closes
            if webmail is not None:
                webmail.stop()
            for t in helpers:
                t.cancel()
            runner_task.cancel()
        await qmgr.drain()
        if controller is not None:
            await controller.close()    # a leader gives its lease up: the next one need not wait
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await transport.close()
        await spool.close()
        log.info("stopped", **dict(qmgr.stats), **getattr(spool, "lock_stats", dict)())


def _reload(reload_now: asyncio.Event, intake) -> None:
    """SIGHUP: reload the directory here, and in every intake worker (gateway.supervisor)."""
    reload_now.set()
    forward = getattr(intake, "reload", None)
    if forward is not None:
        forward()


HEARTBEAT_INTERVAL = 5.0    # seconds between a node's heartbeats on a shared spool


async def _heartbeat(spool, log) -> None:
    """Stamp this node's row every HEARTBEAT_INTERVAL s; a failing database is logged once per
    distinct error (gateway.retry.FaultLog) and tried again at the next beat."""
    from gateway import __version__
    faults = FaultLog(log, "heartbeat_failed")
    while True:
        try:
            await spool.heartbeat(__version__)
        except Exception as e:
            faults.failed(e)
        else:
            faults.recovered()
        await asyncio.sleep(HEARTBEAT_INTERVAL)


def _admin_server(cfg: Config, spool, qmgr, intake, controller, runner, log, journal=None):
    """The admin HTTP API with its socket bound (a busy address fails the start), or None."""
    if not cfg.admin.enabled:
        return None
    from gateway.admin import AdminContext, AdminServer, build_app
    ctx = AdminContext(token=cfg.admin.token, spool=spool, qmgr=qmgr, listening=lambda: intake.serving,
                       controller=controller, runner=runner, journal=journal, intake=intake)
    admin = AdminServer(build_app(ctx), cfg.admin.listen)
    host, port = admin.bind()
    log.info("admin_listening", address=f"{host}:{port}", api=bool(cfg.admin.token))
    return admin


def _webmail_server(cfg: Config, spool, qmgr, watcher, controller, log, runner=None,
                    form_secret: bytes = b""):
    """The continuity webmail with its socket bound (a busy address fails the start), or None.
    ``form_secret``: the spool's shared key of the pre-login forms (every node signs alike)."""
    if not cfg.webmail.enabled:
        return None
    from gateway.admin import AdminServer
    from webmail import WebmailContext, build_app
    ctx = WebmailContext(cfg=cfg, spool=spool, directory=lambda: (watcher.current, watcher.enabled),
                         continuity=(controller.status if controller is not None else lambda: None),
                         notify=qmgr.notify, log=log, controller=controller, runner=runner,
                         qmgr=qmgr, admin_token=cfg.admin.token, form_secret=form_secret)
    server = AdminServer(build_app(ctx), cfg.webmail.listen, tls_cert=cfg.webmail.tls_cert,
                         tls_key=cfg.webmail.tls_key, trusted_proxies=cfg.webmail.trusted_proxies)
    server.ctx = ctx
    if controller is not None:    # alerts that ask for a decision carry a link to the console
        from webmail.admin import alert_links
        controller.decision_link = lambda: alert_links.issue(ctx)
    host, port = server.bind()
    log.info("webmail_listening", address=f"{host}:{port}", url=ctx.public_url)
    return server
