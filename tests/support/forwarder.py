"""A stand-in for Exchange with a canary mailbox that forwards, run as its own process.

    python tests/support/forwarder.py --listen 127.0.0.21:2600 --dir /tmp/fwd \\
        --canary canary@example.com --relay 127.0.0.1:2525 --return mailgate-probe@gw.example.com \\
        [--delay 2.5] [--drop | --bounce] [--name exchange]

An aiosmtpd server that stores every message it accepts as ``<n>.eml`` + ``<n>.json`` (as
tests/support/sink.py). A message for the canary is then, in the background, relayed back to
``--relay`` (the gateway's SMTP port) with smtplib: envelope sender kept, recipient
``--return``, the bytes with one Received: line on top, as Exchange's transport forwarding does;
each relay's reply is appended to ``forwarded.log``. ``--delay N`` waits N seconds first;
``--drop`` swallows canary mail (a broken send connector); ``--bounce`` sends a delivery-status
notification from the null sender to the envelope sender instead, quoting the message.
Stops on SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import email.utils
import itertools
import json
import os
import signal
import smtplib
import sys

from aiosmtpd.smtp import SMTP

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from tests.support.peers import HERE, SinkProc  # noqa: E402


class ForwarderProc(SinkProc):
    """This script as a process; ``messages()``/``count()`` as SinkProc; ``forwarded()`` the
    relay replies logged so far."""

    def __init__(self, host: str, port: int, directory, name: str, *, canary: str, relay: str,
                 return_to: str, extra: tuple[str, ...] = ()):
        super().__init__(host, port, directory, name)
        self.argv = [sys.executable, str(HERE / "forwarder.py"), "--listen", f"{host}:{port}",
                     "--dir", str(directory), "--name", name, "--canary", canary, "--relay", relay,
                     "--return", return_to, *extra]

    def forwarded(self) -> list[str]:
        f = self.dir / "forwarded.log"
        return f.read_text().splitlines() if f.exists() else []


class Forwarder:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.counter = itertools.count(len([f for f in os.listdir(a.dir) if f.endswith(".json")]))
        self.tasks: set[asyncio.Task] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        base = os.path.join(self.a.dir, f"{n:06d}")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "sink": self.a.name, "tls": session.ssl is not None, "peer": list(session.peer)}
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        if self.a.canary.lower() in (r.lower() for r in envelope.rcpt_tos) and not self.a.drop:
            t = asyncio.get_running_loop().create_task(
                self.forward(envelope.mail_from, envelope.original_content))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)
        return f"250 2.0.0 Ok: stored as {self.a.name}-{n}"

    async def forward(self, mail_from: str, data: bytes) -> None:
        await asyncio.sleep(self.a.delay)
        if self.a.bounce:
            sender, rcpt, data = "", mail_from, self.dsn(mail_from, data)
        else:
            received = (f"Received: from {self.a.name}.exchange.test by {self.a.name}.exchange.test "
                        f"(forwarder); {email.utils.formatdate()}\r\n").encode()
            sender, rcpt, data = mail_from, self.a.return_to, received + data
        try:
            reply = await asyncio.to_thread(self.relay, sender, rcpt, data)
        except Exception as e:           # logged for the test to read, never fatal
            reply = f"error {type(e).__name__}: {e}"
        with open(os.path.join(self.a.dir, "forwarded.log"), "a") as f:
            f.write(f"{rcpt} {reply}\n")

    def relay(self, sender: str, rcpt: str, data: bytes) -> str:
        host, _, port = self.a.relay.rpartition(":")
        with smtplib.SMTP(host, int(port), timeout=30) as c:
            c.ehlo(f"{self.a.name}.exchange.test")
            c.mail(sender)
            code, _ = c.rcpt(rcpt)
            if code >= 300:
                return f"RCPT {code}"
            code, msg = c.data(data)
            return f"{code} {msg.decode(errors='replace')}"

    def dsn(self, rcpt: str, original: bytes) -> bytes:
        head = original.split(b"\r\n\r\n", 1)[0]
        subject = next((line[9:].decode(errors="replace") for line in head.split(b"\r\n")
                        if line.lower().startswith(b"subject: ")), "")
        return (f"From: Mail Delivery System <MAILER-DAEMON@{self.a.name}.exchange.test>\r\n"
                f"To: <{rcpt}>\r\nSubject: Undeliverable: {subject}\r\n"
                f"Date: {email.utils.formatdate()}\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
                "--b\r\nContent-Type: text/plain\r\n\r\nDelivery has failed to the canary.\r\n"
                "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; "
                f"{self.a.name}.exchange.test\r\n\r\nFinal-Recipient: rfc822; {self.a.canary}\r\n"
                "Action: failed\r\nStatus: 5.4.1\r\n\r\n"
                "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n").encode() + head + b"\r\n\r\n--b--\r\n"


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--name", default="exchange")
    p.add_argument("--canary", required=True)
    p.add_argument("--relay", required=True, help="host:port to forward canary mail to")
    p.add_argument("--return", dest="return_to", required=True)
    p.add_argument("--delay", type=float, default=0.0)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--drop", action="store_true")
    mode.add_argument("--bounce", action="store_true")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    handler = Forwarder(a)
    host, _, port = a.listen.rpartition(":")

    def factory():
        return SMTP(handler, hostname=f"{a.name}.exchange.test", decode_data=False, timeout=60)

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
