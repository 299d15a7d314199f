"""The recipient directory as intake sees it, in the gateway process and in each intake worker
(gateway.worker): the current RcptContext (policies.rcpt_chain), rebuilt only when the directory
was reloaded, and the loop that reloads the directory file when it changes or on SIGHUP.
Reads no queue state."""
from __future__ import annotations

import asyncio

from gateway.config import Config
from policies.directory import DirectoryWatcher
from policies.rcpt_chain import RcptContext
from policies.relay_networks import TrustedNetworks

__all__ = ["RcptContextSource", "watch_directory"]


class RcptContextSource:
    """The current RcptContext; a new one only when the directory was reloaded."""

    def __init__(self, cfg: Config, watcher: DirectoryWatcher):
        self.cfg, self.watcher = cfg, watcher
        self.trusted = TrustedNetworks(cfg.relay.trusted_networks)
        self._ctx: RcptContext | None = None

    def __call__(self) -> RcptContext:
        d = self.watcher.current
        if self._ctx is None or self._ctx.directory is not d:
            self._ctx = RcptContext(frozenset(self.cfg.relay.accepted_domains), d,
                                    self.watcher.enabled, self.trusted)
        return self._ctx


async def watch_directory(watcher: DirectoryWatcher, interval: float, log,
                           reload_now: asyncio.Event) -> None:
    """Reload the directory when its file changes (checked every ``interval`` s) or at once on
    SIGHUP (``reload_now``), off the event loop; a failure is logged once per distinct error."""
    reported = None
    while True:
        try:
            await asyncio.wait_for(reload_now.wait(), interval)
        except TimeoutError:
            reloaded = await asyncio.to_thread(watcher.maybe_reload)
            error = None if reloaded else watcher.last_error
        else:
            reload_now.clear()
            try:
                await asyncio.to_thread(watcher.reload)
                reloaded, error = True, None
            except Exception as e:
                reloaded, error = False, str(e)
        if reloaded:
            log.info("directory_reloaded", entries=len(watcher.current))
        if error != reported and error:
            log.error("directory_reload_failed", error=error)
        reported = error
