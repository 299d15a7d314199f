"""Exchange's health pages as a separate process: an HTTP server answering configured statuses.

    python tests/support/healthpages.py --listen 127.0.0.1:8080 [--state FILE]
        [--page /owa/healthcheck.htm=200] [--page /ews/healthcheck.htm=503] [--delay /mapi/healthcheck.htm=30]
        [--tls CERT,KEY]

``--page PATH=STATUS`` answers STATUS for GET PATH (a 200 page's body is Exchange's "200 OK<br/>"
and the server name); ``--delay PATH=SECONDS`` waits that long before answering; any other path
is 404. ``--state FILE`` (JSON ``{"pages": {path: status}, "delays": {path: seconds}}``) is read
again on every request, so a test can turn a page from 200 to 503 and back while the server
runs. ``--tls CERT,KEY`` serves HTTPS. Prints "ready" once listening; stops on SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Pages:
    def __init__(self, pages: dict[str, int], delays: dict[str, float], state: str | None):
        self.pages, self.delays, self.state = pages, delays, state

    def lookup(self, path: str) -> tuple[int, float]:
        pages, delays = dict(self.pages), dict(self.delays)
        if self.state:
            try:
                with open(self.state) as f:
                    s = json.load(f)
                pages.update(s.get("pages", {}))
                delays.update(s.get("delays", {}))
            except (OSError, ValueError):
                pass
        return int(pages.get(path, 404)), float(delays.get(path, 0))


def handler_for(pages: Pages):
    class Handler(BaseHTTPRequestHandler):
        server_version = "Microsoft-IIS/10.0"

        def do_GET(self):
            status, delay = pages.lookup(self.path.split("?", 1)[0])
            if delay:
                time.sleep(delay)
            body = (b"200 OK<br/>EXCH01.example.test" if status == 200
                    else f"{status} {HTTPStatus(status).phrase}".encode())
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            sys.stderr.write("healthpages: " + fmt % args + "\n")

    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--page", action="append", default=[])
    p.add_argument("--delay", action="append", default=[])
    p.add_argument("--state")
    p.add_argument("--tls")
    a = p.parse_args()
    pages = {k: int(v) for k, v in (x.rsplit("=", 1) for x in a.page)}
    delays = {k: float(v) for k, v in (x.rsplit("=", 1) for x in a.delay)}
    host, _, port = a.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), handler_for(Pages(pages, delays, a.state)))
    server.daemon_threads = True
    if a.tls:
        cert, key = a.tls.split(",")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
