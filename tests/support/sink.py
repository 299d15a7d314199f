"""A downstream SMTP sink, run as its own process: aiosmtpd storing every message it accepts.

    python tests/support/sink.py --listen 127.0.0.11:2600 --dir /tmp/sinkA [--name mx1]
        [--rcpt-reply bad@example.com=550] [--all-reply 451] [--require-tls CERT,KEY]
        [--data-delay SECONDS] [--no-smtputf8] [--concurrency-file PATH]

Each accepted message is written as ``<n>.eml`` (the bytes as received after DATA, dot-unstuffed)
and ``<n>.json`` (MAIL FROM, RCPT TO, options, peer), the .json last, so a reader that sees the
.json sees the whole message. ``--rcpt-reply ADDR=CODE`` answers CODE at RCPT for ADDR;
``--rcpt-reply 'ADDR=550 5.1.1000 text'`` answers that whole reply line instead;
``--all-reply CODE`` answers CODE to every RCPT (a sick Exchange); ``--data-delay SECONDS`` waits
that long after the final dot before storing and answering (a slow Exchange); ``--no-smtputf8``
does not offer SMTPUTF8 and takes commands in ASCII only (on-premises Exchange);
``--concurrency-file PATH`` keeps in PATH the highest number of sessions that were inside DATA
at once (from the DATA command to the final reply), rewritten atomically when it grows (JSON
``{"max_in_data": N}``). Stops on SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import ssl

from aiosmtpd.smtp import SMTP

REPLIES = {421: "421 4.3.2 Service not available", 450: "450 4.2.1 Mailbox busy",
           451: "451 4.3.0 Try again later", 452: "452 4.2.2 Over quota",
           550: "550 5.1.1 User unknown", 552: "552 5.2.2 Mailbox full", 554: "554 5.7.1 Rejected"}


class InData:
    """Counts sessions between their DATA command and its final reply; records the maximum."""

    def __init__(self, path: str | None):
        self.path, self.now, self.max = path, 0, 0

    def enter(self) -> None:
        self.now += 1
        if self.now > self.max:
            self.max = self.now
            if self.path:
                with open(self.path + ".tmp", "w") as f:
                    json.dump({"max_in_data": self.max}, f)
                os.rename(self.path + ".tmp", self.path)

    def leave(self) -> None:
        self.now -= 1


IN_DATA = InData(None)


class CountingSMTP(SMTP):
    async def smtp_DATA(self, arg):
        IN_DATA.enter()
        try:
            return await super().smtp_DATA(arg)
        finally:
            IN_DATA.leave()


class Sink:
    def __init__(self, directory: str, name: str, rcpt_replies: dict[str, int | str],
                 all_reply: int | None, data_delay: float = 0.0):
        self.dir, self.name = directory, name
        self.rcpt_replies, self.all_reply, self.data_delay = rcpt_replies, all_reply, data_delay
        self.counter = itertools.count(len([f for f in os.listdir(directory) if f.endswith(".json")]))

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        code = self.all_reply or self.rcpt_replies.get(address.lower())
        if isinstance(code, str):
            return code
        if code:
            return REPLIES.get(code, f"{code} {code // 100}.0.0 sink says no")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        n = next(self.counter)
        base = os.path.join(self.dir, f"{n:06d}")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "mail_options": envelope.mail_options, "sink": self.name,
                "tls": session.ssl is not None, "peer": list(session.peer)}
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return f"250 2.0.0 Ok: stored as {self.name}-{n}"


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--name", default="sink")
    p.add_argument("--rcpt-reply", action="append", default=[])
    p.add_argument("--all-reply", type=int)
    p.add_argument("--data-delay", type=float, default=0.0)
    p.add_argument("--tls", help="CERT,KEY: offer STARTTLS")
    p.add_argument("--no-smtputf8", action="store_true", help="do not offer SMTPUTF8")
    p.add_argument("--concurrency-file", help="record the most sessions inside DATA at once")
    a = p.parse_args()
    IN_DATA.path = a.concurrency_file
    os.makedirs(a.dir, exist_ok=True)
    rr: dict[str, int | str] = {}
    for x in a.rcpt_reply:
        k, v = x.rsplit("=", 1)
        if not v.isdigit():             # "ADDR=550 5.1.1000 text": a whole reply line
            k, v = x.split("=", 1)
        rr[k.lower()] = int(v) if v.isdigit() else v
    handler = Sink(a.dir, a.name, rr, a.all_reply, a.data_delay)
    ctx = None
    if a.tls:
        cert, key = a.tls.split(",")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    host, _, port = a.listen.rpartition(":")

    def factory():
        proto = CountingSMTP.__new__(CountingSMTP)
        proto.line_length_limit = 1 << 20
        SMTP.__init__(proto, handler, hostname=f"{a.name}.sink.test", enable_SMTPUTF8=not a.no_smtputf8,
                      decode_data=False, data_size_limit=64 << 20, tls_context=ctx, timeout=60)
        return proto

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host.strip("[]"), int(port), reuse_address=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
