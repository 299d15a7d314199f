"""Intake in worker processes (``server.workers`` > 1): the supervisor's side.

The process model (docs/operations.md): ``mailgate serve`` is the supervisor. It opens the
spool and runs crash recovery (once, before any worker exists), binds every SMTP listener
itself, then starts N intake workers (gateway.worker, ``python -m gateway.worker``) that inherit
the listening sockets: one accept queue per listener, shared by the workers (the kernel hands
each connection to one of them). Everything else stays in the supervisor, unchanged: the queue
manager (claims, delivery), continuity (probes, controller, replay rate, leadership), the
journal, the admin API and the webmail. A worker only receives: limits, policies and the group
commit into the spool: on SQLite its own writer thread and connection to the same WAL database
(every writer flocks write_lock_path around its write transaction); on PostgreSQL its own small
pool as this gateway's node (the supervisor registered the node and passes its tag: a worker
writes no ``nodes`` row, so ``mailgate cluster status`` shows one node, started when the
supervisor started). The queue manager here claims what any worker committed.

``WorkerPool`` takes the place of gateway.intake.IntakeServer in gateway.app (``start()``,
``stop()``, ``serving``, ``proxy_refused``):

- each worker gets one end of a socketpair (frames: gateway.notify_wire): ``R`` when it
  serves, ``q`` after commits (the queue manager's ``notify``: delivery starts at once; its
  POLL_INTERVAL scan stays the fallback), ``p`` + a reason index per connection a PROXY listener
  refused (summed in ``proxy_refused``, which /metrics shows); end of file on either side means
  the other process is gone;
- the round-trip probe (``mailbox``: the supervisor's gateway.health.ProbeMailbox, where the
  probe awaits its tokens): every token it awaits and every one that ended goes to every worker
  (``E``/``F`` + token), and a worker started (or restarted) gets the current set (recently
  ended, then awaited) at its spawn, written before its configuration on stdin, so it has the
  set before it serves. A worker's intake consumes returns as in one process
  (RelayedProbeMailbox) and reports those of awaited tokens (``C`` + JSON), which settle the
  probe's future here (the latency ends at this process's receipt of the report);
- a worker that exits while the gateway runs is logged (``worker_exited`` with its exit code or
  signal) and started again after a backoff: RESTART_FIRST s, doubling up to RESTART_MAX s for
  a worker that keeps dying within STABLE_AFTER s of its start. The listening sockets stay open
  in the supervisor meanwhile: connections wait in the accept queue or go to the other workers;
- ``stop()`` (SIGTERM/SIGINT to the supervisor): SIGTERM to every worker (each stops accepting,
  refuses new transactions with 421, lets its commits in flight finish, closes its spool), waits
  up to STOP_GRACE s for them (then SIGKILL: what they had not acknowledged is not lost, since
  nothing unacknowledged counts), and closes the listening sockets; gateway.app then drains
  deliveries as in one process and exits 0;
- ``reload()`` (SIGHUP): forwarded to every worker (each reloads its recipient directory).

The [smtp] connection limits (max_connections, max_connections_per_client) and DATA limits
(max_concurrent_data and its per-client limit) are the gateway's: counted over every worker in
one shared memory table (gateway.intake.shared_limits; a dead worker's sessions and transfers
are cleared from it before its restart).
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from gateway.config import Config, parse_listen
from gateway.intake.proxy import REASONS
from gateway.intake.server import LISTEN_BACKLOG
from gateway.intake.shared_limits import SharedTable
from gateway.notify_wire import FrameReader, FrameWriter, WireError, frame, parse_consumed

RESTART_FIRST = 0.5     # seconds before a dead worker is started again
RESTART_MAX = 30.0      # the longest wait, for a worker that keeps dying
STABLE_AFTER = 30.0     # seconds a worker must run for its next death to count as a first one
STOP_GRACE = 45.0       # seconds workers get to stop (their commits drain within 30 s)
ROOT = Path(__file__).resolve().parent.parent

__all__ = ["WorkerPool", "bind_listeners", "write_lock_path"]


def write_lock_path(cfg: Config) -> Path:
    """The file every writer of the SQLite spool (the supervisor and each worker) flocks around
    its write transaction (spool.Spool.write_lock): ``server.data_dir/spool.db-writelock``."""
    return cfg.spool_path.with_name(cfg.spool_path.name + "-writelock")


def bind_listeners(cfg: Config) -> dict[int, list[socket.socket]]:
    """Bind and listen on every SMTP listener: {index in smtp.all_listeners(): [sockets]} (one
    socket per address the host resolves to). Raises OSError naming the address."""
    out: dict[int, list[socket.socket]] = {}
    try:
        for i, listener in enumerate(cfg.smtp.all_listeners()):
            host, port = parse_listen(listener.address)
            seen = set()
            for family, kind, proto, _name, addr in socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
                if addr in seen:
                    continue
                seen.add(addr)
                s = socket.socket(family, kind, proto)
                out.setdefault(i, []).append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    s.bind(addr)
                except OSError as e:
                    raise OSError(e.errno, f"cannot listen on {listener.address}: {e.strerror}") \
                        from None
                s.listen(LISTEN_BACKLOG)
                s.setblocking(False)
    except BaseException:
        for socks in out.values():
            for s in socks:
                s.close()
        raise
    return out


class _Slot:
    """Worker number K and its current process."""

    def __init__(self, number: int):
        self.number = number
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None      # the supervisor's end of the socketpair
        self.started_at = 0.0
        self.failures = 0          # deaths in a row, each within STABLE_AFTER s of its start
        self.ready = False
        self.writer: FrameWriter | None = None     # frames to the worker (probe tokens)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class WorkerPool:
    """N intake worker processes on listeners bound here. ``on_queued(None)`` is called when a
    worker reports commits (the queue manager's notify). ``mailbox``: the round-trip probe's
    ProbeMailbox, whose tokens the workers get (see the module doc), or None."""

    def __init__(self, cfg: Config, log, on_queued: Callable[[str | None], None],
                 node_tag: str = "", mailbox=None):
        self.cfg, self.log, self.on_queued = cfg, log, on_queued
        #: PostgreSQL spool: the tag of this node (the supervisor's PgSpool.node_tag), given to
        #: every worker so it joins the node without registering it (gateway.spool_open)
        self.node_tag = node_tag
        self.mailbox = mailbox
        if mailbox is not None:
            mailbox.on_change = self._probe_changed
        self.probe_reports = 0     # "C" messages received from the workers
        self.count = cfg.server.worker_count
        #: PROXY listeners' refusals, per reason, as the workers report them (gateway.worker)
        self.proxy_refused: Counter[str] = Counter()
        self.restarts = 0
        self.wakeups = 0           # "q" messages received from the workers
        self._listen: dict[int, list[socket.socket]] = {}
        self._slots = [_Slot(k) for k in range(1, self.count + 1)]
        self._tasks: set[asyncio.Task] = set()
        self._config = cfg.model_dump_json().encode()
        self._stopping = False
        #: [smtp] connection limits counted over every worker (gateway.intake.shared_limits)
        self.limits = SharedTable.create(self.count, cfg.smtp.max_connections)

    async def start(self) -> list[tuple[str, int]]:
        """Bind the listeners, start every worker; return the bound (host, port) pairs."""
        self._listen = bind_listeners(self.cfg)
        for slot in self._slots:
            self._spawn(slot)
        self.log.info("workers_started", workers=self.count,
                      pids=[s.proc.pid for s in self._slots if s.proc is not None])
        return [s.getsockname()[:2] for socks in self._listen.values() for s in socks]

    @property
    def serving(self) -> bool:
        """True while the listeners are open and at least one worker serves them."""
        return bool(self._listen) and any(s.ready and s.alive for s in self._slots)

    def pids(self) -> list[int]:
        """The worker processes running now."""
        return [s.proc.pid for s in self._slots if s.alive]

    def reload(self) -> None:
        """SIGHUP to every worker: each reloads its recipient directory now."""
        for slot in self._slots:
            if slot.alive:
                slot.proc.send_signal(signal.SIGHUP)

    def _spawn(self, slot: _Slot) -> None:
        parent, child = socket.socketpair()
        parent.setblocking(False)
        listen = [(i, s.fileno()) for i, socks in self._listen.items() for s in socks]
        argv = [sys.executable, "-m", "gateway.worker", "--number", str(slot.number),
                "--notify", str(child.fileno()),
                "--limits", f"{self.limits.fd}:{self.limits.slots}",
                *(("--node-tag", self.node_tag) if self.node_tag else ()),
                *(a for i, fd in listen for a in ("--listen", f"{i}:{fd}"))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        # the worker starts with SIGHUP blocked (the mask is inherited across exec): a reload
        # forwarded while it is still importing would otherwise kill it (SIGHUP's default
        # action); it unblocks SIGHUP once its handler is installed, and a pending one reloads
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env,
                                    pass_fds=[child.fileno(), self.limits.fd,
                                              *(fd for _i, fd in listen)])
        except BaseException:
            parent.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            child.close()
        slot.proc, slot.sock, slot.ready = proc, parent, False
        slot.writer = FrameWriter(parent)
        if self.mailbox is not None:   # on the socket before the worker has read its config
            ended, awaited = self.mailbox.snapshot()
            slot.writer.send(b"".join([*(frame(b"F", t.encode()) for t in ended),
                                       *(frame(b"E", t.encode()) for t in awaited)]))
        try:
            proc.stdin.write(self._config)
            proc.stdin.close()
        except OSError:            # it died at once: _watch reports it
            pass
        slot.started_at = time.monotonic()
        asyncio.get_running_loop().add_reader(parent.fileno(), self._readable, slot, parent,
                                              FrameReader())
        self._track(asyncio.ensure_future(self._watch(slot, proc)))
        self.log.info("worker_started", worker_number=slot.number, pid=proc.pid)

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _readable(self, slot: _Slot, sock: socket.socket, reader: FrameReader) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:                   # the worker is gone (its exit is handled by _watch)
            self._close_sock(sock)
            return
        try:
            frames = reader.feed(data)
        except WireError as e:         # a bug on one side: what follows cannot be read in step
            self.log.error("worker_wire_error", worker_number=slot.number, error=str(e))
            return
        queued = False
        for kind, payload in frames:
            if kind == "R" and slot.sock is sock:
                slot.ready = True
                self.log.info("worker_ready", worker_number=slot.number, pid=slot.proc.pid)
            elif kind == "q":
                queued = True
            elif kind == "p":          # a PROXY refusal in that worker
                if payload[0] < len(REASONS):
                    self.proxy_refused[REASONS[payload[0]]] += 1
            elif kind == "C":
                self._probe_report(slot, payload)
        if queued:                     # one wake-up per read, however many commits
            self.wakeups += 1
            self.on_queued(None)

    def _probe_report(self, slot: _Slot, payload: bytes) -> None:
        """A worker consumed a return (or a bounce) of a token the probe awaited: settle it."""
        try:
            token, ok, detail = parse_consumed(payload)
        except WireError as e:
            self.log.error("worker_wire_error", worker_number=slot.number, error=str(e))
            return
        self.probe_reports += 1
        if self.mailbox is None or not self.mailbox.settle(token, ok, detail):
            self.log.info("probe_report_late", worker_number=slot.number, token=token, ok=ok)

    def _probe_changed(self, what: str, token: str) -> None:
        """The supervisor's mailbox awaits ``token`` (expect) or no longer (forget): tell every
        worker whose socket is open (ready or not: a starting worker reads it after its set)."""
        data = frame(b"E" if what == "expect" else b"F", token.encode())
        for slot in self._slots:
            if slot.writer is not None and slot.sock is not None and slot.sock.fileno() >= 0:
                slot.writer.send(data)

    def _close_sock(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0:
            for slot in self._slots:
                if slot.sock is sock and slot.writer is not None:
                    slot.writer.close()
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    async def _watch(self, slot: _Slot, proc: subprocess.Popen) -> None:
        """Wait for ``proc`` to exit; unless the pool is stopping, start the slot again."""
        await _exited(proc)
        code = proc.returncode
        if slot.sock is not None:
            self._close_sock(slot.sock)
        slot.ready = False
        self.limits.clear_worker(slot.number)   # its sessions died with it
        if self._stopping:
            return
        ran = time.monotonic() - slot.started_at
        slot.failures = 1 if ran >= STABLE_AFTER else slot.failures + 1
        delay = min(RESTART_MAX, RESTART_FIRST * 2 ** (slot.failures - 1))
        how = ({"signal": signal.Signals(-code).name} if code < 0 else {"code": code})
        self.log.error("worker_exited", worker_number=slot.number, pid=proc.pid, **how,
                       ran_s=round(ran, 1), restart_in=delay)
        await asyncio.sleep(delay)
        if not self._stopping:
            self.restarts += 1
            self._spawn(slot)

    async def stop(self) -> None:
        """SIGTERM every worker, wait for them (STOP_GRACE s, then SIGKILL), close the listeners."""
        self._stopping = True
        running = [s.proc for s in self._slots if s.alive]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(_exited(p)) for p in running]
        if waits:
            _done, late = await asyncio.wait(waits, timeout=STOP_GRACE)
            for proc in running:
                if proc.poll() is None:
                    self.log.error("worker_kill", pid=proc.pid, after_s=STOP_GRACE)
                    proc.kill()
            if late:
                await asyncio.wait(late, timeout=5.0)
        for t in list(self._tasks):
            t.cancel()
        for slot in self._slots:
            if slot.sock is not None:
                self._close_sock(slot.sock)
        for socks in self._listen.values():
            for s in socks:
                s.close()
        self._listen = {}
        self.log.info("workers_stopped", restarts=self.restarts, wakeups=self.wakeups,
                      codes=[s.proc.returncode for s in self._slots if s.proc is not None])


async def _exited(proc: subprocess.Popen) -> None:
    """Wait (without blocking the loop) until ``proc`` has exited, and reap it: a pidfd
    (Linux ≥ 5.3) watched by the loop, else a poll every 0.2 s."""
    if proc.poll() is not None:
        return
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        while proc.poll() is None:
            await asyncio.sleep(0.2)
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    proc.wait()
