"""A canary HTTP server standing for "the internet" in browser tests: every request it receives
is a remote fetch or a script that ran, and is appended (one JSON line) to ``--log``.

    python tests/support/canary.py --port P --log hits.jsonl

Answers every GET/POST with something a browser would use (a 1x1 GIF, CSS, HTML, script),
so a fetch that got through is never hidden by an error.
"""
from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def _hit(self):
            with open(args.log, "a") as f:
                f.write(json.dumps({"at": time.time(), "method": self.command, "path": self.path,
                                    "referer": self.headers.get("referer", "")}) + "\n")
            if self.path.endswith(".css"):
                body, ctype = b"body{background:red}", "text/css"
            elif self.path.endswith(".js"):
                body, ctype = b"top.document.title='XSSRAN'", "text/javascript"
            elif self.path.endswith(".html"):
                body, ctype = b"<script>top.document.title='XSSRAN'</script>", "text/html"
            else:
                body, ctype = GIF, "image/gif"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _hit

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
