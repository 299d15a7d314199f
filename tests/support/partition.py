"""A network partition on loopback for tests: a TCP proxy in front of a real server (here the
test PostgreSQL) whose ``cut()`` stops every byte in both directions while keeping every socket
open, as a partition without a TCP reset does (the peers see silence, not an error), and whose
``heal()`` lets them flow again. Bytes read just before a cut are held, not dropped (TCP would
retransmit them). New connections during a cut are accepted and then hear nothing. Runs its
own event loop in a thread; ``close()`` ends it."""
from __future__ import annotations

import asyncio
import threading

from tests.support.peers import free_port


class PartitionProxy:
    """``PartitionProxy(target_port)``: listens on 127.0.0.1:``.port``, forwards to the target."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.port, self.target = free_port(), (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        if not ready.wait(5):
            raise RuntimeError("partition proxy did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._conn, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self.flowing.wait()
        try:
            r2, w2 = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await self.flowing.wait()
                    data = await a.read(65536)
                    if not data:
                        break
                    await self.flowing.wait()      # read before the cut: held until the heal
                    b.write(data)
                    await b.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                b.close()

        try:
            await asyncio.gather(pipe(r, w2), pipe(r2, w))
        except asyncio.CancelledError:
            pass

    def cut(self) -> None:
        """Stop every byte, both ways, on every connection (open or new)."""
        self.loop.call_soon_threadsafe(self.flowing.clear)

    def heal(self) -> None:
        self.loop.call_soon_threadsafe(self.flowing.set)

    def close(self) -> None:
        """Close the listener and every connection, then stop the loop."""
        async def shut():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(shut()))
