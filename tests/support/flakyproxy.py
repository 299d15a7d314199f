"""A flapping downstream for tests and bench/continuity.py: a TCP proxy in front of a real sink
that answers 421 and closes every ``every``-th connection (so every ``every``-th probe fails),
running its own event loop in a thread."""
from __future__ import annotations

import asyncio
import threading

from tests.support.peers import free_port

REPLY_FLAP = b"421 4.3.2 flapping: one connection in three refused\r\n"


class FlakyProxy:
    """``FlakyProxy(target_port, every=3)``: listens on 127.0.0.1:``.port``; ``close()``."""

    def __init__(self, target_port: int, every: int = 3):
        self.port, self.target, self.every, self.n = free_port(), target_port, every, 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        if not ready.wait(5):
            raise RuntimeError("flaky proxy did not start")

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    async def _conn(self, r, w):
        self.n += 1
        if self.n % self.every == 0:
            w.write(REPLY_FLAP)
            await w.drain()
            w.close()
            return
        r2, w2 = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(a, b):
            try:
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
            except OSError:
                pass
            finally:
                b.close()
        await asyncio.gather(pipe(r, w2), pipe(r2, w))

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
