"""An SMTP intake worker process (``server.workers`` > 1), started by gateway.supervisor:

    python -m gateway.worker --number K --notify FD --limits FD:SLOTS [--node-tag TAG] --listen INDEX:FD [...] < CONFIG_JSON

It serves the listening sockets the supervisor bound (inherited file descriptors: one accept
queue per listener shared by every worker), with the same intake as a single-process gateway
(gateway.intake: limits, policies, group commit into the spool before the 250). It does no
delivery, no recovery and no continuity: those stay in the supervisor. Its spool is the one the
configuration names, opened by gateway.spool_open.open_worker_spool:

- SQLite: its own connection to the WAL database, ``recover=False`` (recovery ran once, in the
  supervisor, before any worker started; a worker must never requeue another process's
  ``active`` messages), queuing on the file's write lock;
- PostgreSQL: a pool of its own (at most 2 connections) as the supervisor's node, with the node
  tag the supervisor passes (``--node-tag``): nothing is registered or migrated, and the open
  needs no database, so a worker (re)started while PostgreSQL is down serves and answers
  451 4.3.0 until the database is back, as a single-process gateway does.

Every queue ID it makes carries its tag (spool.commit.node_tag(K), after the node's tag on
PostgreSQL), so IDs of different workers can never be equal.

The notify socket (one end of a socketpair; the supervisor holds the other; frames as
gateway.notify_wire reads and writes them): the worker writes ``R`` once it serves, ``q`` after
durable commits (at most one per event-loop iteration) so the supervisor's queue manager wakes
at once instead of at its next scan, and ``p`` + one byte K for each connection a PROXY
listener refused (K: the index of its reason in gateway.intake.proxy.REASONS), which the
supervisor adds to its ``proxy_refused`` for /metrics. With ``probes.roundtrip`` the
supervisor sends the tokens its round-trip probe awaits (``E``) and those whose check ended
(``F``): the set at the worker's start is on the socket before the worker serves (it is read
before the listeners start); this worker's RelayedProbeMailbox consumes returning probes as one
process does (the return address alone in its transaction, the probe's envelope, bounces, late,
unknown and forged mail: each logged ``probe_consumed`` with ``worker=K``; its own recipient
directory for ``disabled``) and writes ``C`` + what it consumed for an awaited token, which the
supervisor's probe takes as its result. End of file on it means the supervisor is gone: the
worker stops as on SIGTERM.

SIGTERM/SIGINT: stop accepting, refuse new transactions (421), let commits in flight finish
(bounded: IntakeHandler.drain, 30 s), close the spool, exit 0. SIGHUP: reload the recipient
directory now. Every log line carries ``worker=K`` (and ``node`` on PostgreSQL). The
configuration comes as JSON on stdin (the supervisor's validated Config, so a worker restarted
later runs the same configuration even if the file changed meanwhile).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable

from gateway.config import Config
from gateway.intake.directory import RcptContextSource, watch_directory
from gateway.intake.handler import IntakeHandler
from gateway.intake.proxy import REASONS
from gateway.intake.server import IntakeServer
from gateway.intake.shared_limits import SharedConnectionLimits, SharedDataSlots, SharedTable
from gateway.logs import flush_logs, make_logger, route_stdlib
from gateway.notify_wire import FrameReader, FrameWriter, WireError, consumed_frame
from gateway.retry import supervise
from gateway.config_spool import node_name
from gateway.spool_open import open_worker_spool
from policies.directory import DirectoryWatcher


class ReportedCounter(Counter):
    """The worker's PROXY refusal counter (IntakeServer.proxy_refused): each increment is also
    sent to the supervisor as ``p`` + the reason's index (see the module doc)."""

    def __init__(self, send: Callable[[bytes], None]):
        super().__init__()
        self._send = send

    def __setitem__(self, key, value) -> None:
        delta = value - self.get(key, 0)
        super().__setitem__(key, value)
        if delta > 0 and key in REASONS:
            self._send((b"p" + bytes([REASONS.index(key)])) * delta)


class Notifier:
    """Tells the supervisor over the notify socket (a FrameWriter: what a full socket does not
    take is sent when it can; ``q`` and ``p`` are dropped past its limit, and on a broken socket,
    since the queue manager's periodic scan finds the message anyway)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.writer = FrameWriter(sock)
        self._pending = False

    def send(self, what: bytes) -> None:
        self.writer.send(what, droppable=what[:1] in (b"q", b"p"))

    def probe_consumed(self, token: str, ok: bool, detail: str) -> None:
        """RelayedProbeMailbox's report: a return (or bounce) of a token the supervisor awaits."""
        self.writer.send(consumed_frame(token, ok, detail))

    def queued(self, _queue_id: str | None = None) -> None:
        """IntakeHandler's on_queued: one ``q`` per loop iteration, however many commits."""
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._pending = False
        self.send(b"q")


async def run(cfg: Config, number: int, listen: dict[int, list[socket.socket]],
              notify: socket.socket, log, limits: tuple[int, int],
              node_tag: str = "") -> None:
    """Serve ``listen`` until SIGTERM/SIGINT or the supervisor goes away."""
    loop = asyncio.get_running_loop()
    stop, reload_now = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_now.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})   # blocked by the supervisor
    notify.setblocking(False)
    notifier = Notifier(notify)
    watcher = DirectoryWatcher(cfg.directory.file)
    mailbox = None
    if cfg.probes.roundtrip:   # imported only then: gateway.health costs ~0.2 s of start-up
        from gateway.health.roundtrip_probe import RelayedProbeMailbox
        mailbox = RelayedProbeMailbox(cfg.probes.roundtrip_return, notifier.probe_consumed,
                                      directory=lambda: watcher.current, log=log)
    frames = FrameReader()

    def supervisor_said() -> None:
        try:
            data = notify.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(notify.fileno())
            notifier.writer.close()
            log.warning("supervisor_gone", hint="the supervisor closed its end: stopping")
            stop.set()
            return
        try:
            said = frames.feed(data)
        except WireError as e:
            log.error("supervisor_wire_error", error=str(e))
            return
        for kind, payload in said:
            if mailbox is None:
                continue
            if kind == "E":
                mailbox.track(payload.decode("ascii", "replace"))
            elif kind == "F":
                mailbox.forget(payload.decode("ascii", "replace"))
    loop.add_reader(notify.fileno(), supervisor_said)
    supervisor_said()      # the probe's tokens, written before our configuration: read them now

    spool = await open_worker_spool(cfg, number, node_tag)
    try:
        handler = IntakeHandler(cfg, spool, RcptContextSource(cfg, watcher), notifier.queued, log,
                                probe_mailbox=mailbox)
        intake = IntakeServer(cfg, handler)
        intake.proxy_refused = ReportedCounter(notifier.send)     # summed by the supervisor
        # the gateway's connection and DATA limits, counted over every worker
        table = SharedTable(limits[0], cfg.server.worker_count, limits[1])
        s = cfg.smtp
        intake.limits = SharedConnectionLimits(table, number, s.max_connections,
                                               s.max_connections_per_client)
        intake.data_slots = SharedDataSlots(table, number, s.max_concurrent_data,
                                            s.max_concurrent_data_per_client)
        bound = await intake.start(listen)
        log.info("worker_listening", pid=os.getpid(), addresses=[f"{h}:{p}" for h, p in bound],
                 directory_entries=len(watcher.current) if watcher.enabled else None)
        notifier.send(b"R")
        watch = asyncio.create_task(supervise("directory", lambda: watch_directory(
            watcher, cfg.directory.reload_interval, log, reload_now), log), name="directory")
        await stop.wait()
        log.info("worker_stopping")
        await intake.stop()        # closes this worker's copies of the listeners, drains commits
        watch.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await spool.close()
        log.info("worker_stopped", pid=os.getpid(), **getattr(spool, "lock_stats", dict)())


def _listen_arg(spec: str) -> tuple[int, int]:
    index, _, fd = spec.partition(":")
    return int(index), int(fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.worker", description=__doc__.split("\n")[0])
    ap.add_argument("--number", type=int, required=True, help="this worker's number K (1..N)")
    ap.add_argument("--notify", type=int, required=True, help="fd of the socket to the supervisor")
    ap.add_argument("--limits", type=_listen_arg, required=True,
                    help="FD:SLOTS, the supervisor's shared table of connection and DATA limits")
    ap.add_argument("--node-tag", default="",
                    help="PostgreSQL spool: the tag the supervisor's node registration gave")
    ap.add_argument("--listen", type=_listen_arg, action="append", default=[],
                    help="INDEX:FD, a listening socket for listener INDEX of smtp.all_listeners()")
    a = ap.parse_args(argv)
    cfg = Config.model_validate_json(sys.stdin.buffer.read())
    node = {"node": node_name(cfg)} if cfg.spool.backend == "postgresql" else {}
    log = make_logger(cfg.log.level, cfg.log.format, batched=True, worker=a.number, **node)
    route_stdlib(log, cfg.log.level)
    listen: dict[int, list[socket.socket]] = {}
    for index, fd in a.listen:
        listen.setdefault(index, []).append(socket.socket(fileno=fd))
    notify = socket.socket(fileno=a.notify)
    from gateway import eventloop
    try:
        eventloop.run(run(cfg, a.number, listen, notify, log, a.limits,
                                  a.node_tag), cfg.server.event_loop, log)
    except Exception as e:     # logged with worker=K; the supervisor restarts the worker
        log.error("worker_failed", error=f"{type(e).__name__}: {e}")
        return 1
    finally:
        flush_logs(log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
