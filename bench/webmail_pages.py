"""Webmail page timings on a real gateway process: the folder page of a 1,000-message mailbox and
a search over a 10,000-message mailbox (issue 7, "Figures for the closing note").

    python3 bench/webmail_pages.py [--small 1000] [--big 10000] [--reps 9] [--no-browser]

Files --small messages (~4 KiB each) into small@example.com and --big into big@example.com
directly in a fresh spool (spool.mailbox.file_message, as a held message is filed), starts
`python -m gateway.cli serve` with the webmail on a free port, and times, with a new HTTP
connection per request, the median of --reps requests (ms, wall clock at the client, whole response
read): the inbox's first and last page, one message view, and searches (a word in every message,
a word in ~1 %, two words, a prefix). With chromium (Debian's, via Playwright) it also times a
full page load of the inbox (navigation start → load event). Prints one line per figure.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spool import accounts, db, mailbox  # noqa: E402
from tests.conftest import config_toml  # noqa: E402
from tests.support.peers import GatewayProc, free_port, wait_for  # noqa: E402

WORDS = ("budget forecast meeting invoice report offsite payment review project deadline coffee "
         "contract supplier delivery schedule holiday training quarterly customer ticket").split()


def fill(conn, owner: str, n: int, rng: random.Random) -> None:
    conn.execute("BEGIN IMMEDIATE")
    now = time.time() - n
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(600)]
        if i % 100 == 0:
            words.append("zanzibar")                     # the rare word: 1 % of messages
        body = " ".join(words)
        subject = f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{i}"
        data = (f"From: Sender {i} <s{i}@remote.test>\r\nTo: {owner}\r\nSubject: {subject}\r\n"
                f"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{owner}.{i}@remote.test>\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()
        mailbox.file_message(conn, mailbox.FilingEntry(
            queue_id=f"{owner.split('@')[0]}{i:06d}", data=data, mailboxes={owner: owner},
            envelope_from=f"s{i}@remote.test", from_header=f"Sender {i} <s{i}@remote.test>",
            to_header=owner, subject=subject, date_header="Mon, 30 Nov 2026 10:00:00 +0000",
            body_text=body), now=now + i)
    conn.execute("COMMIT")


def median_ms(client, url: str, reps: int) -> float:
    client.get(url)                                      # warm (page cache, templates)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        r = client.get(url)
        r.read()
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--big", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    import httpx

    work = Path(tempfile.mkdtemp(prefix="mailgate-webmail-bench-"))
    data = work / "data"
    conn = db.connect(data / "spool.db")
    rng = random.Random(7)
    t = time.perf_counter()
    fill(conn, "small@example.com", args.small, rng)
    fill(conn, "big@example.com", args.big, rng)
    filed = time.perf_counter() - t
    cookies = {}
    for who in ("small@example.com", "big@example.com"):
        def tx(who=who):
            accounts.ensure_user(conn, who)
            return accounts.create_session(conn, who, lifetime=3600)[0]
        cookies[who] = db.transaction(conn, tx)
    first_id = conn.execute("SELECT max(id) FROM mailbox_messages WHERE mailbox='small@example.com'").fetchone()[0]
    conn.close()
    print(f"filed {args.small} + {args.big} messages in {filed:.1f} s "
          f"(spool {(data / 'spool.db').stat().st_size / 1e6:.0f} MB)")

    port, web = free_port(), free_port()
    toml = config_toml(port=port, data_dir=data, smarthost="[127.0.0.1]:9",
                       extra=f'\n[webmail]\nlisten = "127.0.0.1:{web}"\n')
    gw = GatewayProc(work / "gw", toml, port).start()
    base = f"http://127.0.0.1:{web}"
    try:
        wait_for(lambda: httpx.get(base + "/healthz").status_code == 200, 20, what="webmail")
        fresh = httpx.Limits(max_keepalive_connections=0)      # a new connection per request (see doc)
        small = httpx.Client(base_url=base, cookies={"mailgate": cookies["small@example.com"]}, limits=fresh)
        big = httpx.Client(base_url=base, cookies={"mailgate": cookies["big@example.com"]}, limits=fresh)
        kept = httpx.Client(base_url=base, cookies={"mailgate": cookies["small@example.com"]})
        last = -(-args.small // 50)
        rows = [
            (f"inbox page 1 of {args.small}-message mailbox", small, "/mail/inbox"),
            (f"inbox page {last} (last) of {args.small}", small, f"/mail/inbox?page={last}"),
            ("message view (4 KiB text)", small, f"/msg/{first_id}"),
            (f"search 'budget' (every message) over {args.big}", big, "/mail/search?q=budget"),
            (f"search 'zanzibar' (1 %) over {args.big}", big, "/mail/search?q=zanzibar"),
            (f"search 'budget zanzibar' over {args.big}", big, "/mail/search?q=budget+zanzibar"),
            (f"search prefix 'deli' over {args.big}", big, "/mail/search?q=deli"),
            (f"inbox page 1 of {args.small}, keep-alive connection", kept, "/mail/inbox"),
        ]
        for label, client, url in rows:
            print(f"{label:55s} {median_ms(client, url, args.reps):8.1f} ms (median of {args.reps})")
        if not args.no_browser:
            browser_load(base, cookies["small@example.com"], args.reps, args.small)
    finally:
        gw.stop()
    return 0


def browser_load(base: str, cookie: str, reps: int, n: int) -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        ctx = b.new_context()
        ctx.add_cookies([{"name": "mailgate", "value": cookie, "url": base}])
        page = ctx.new_page()
        page.goto(base + "/mail/inbox")
        times = []
        for _ in range(reps):
            page.goto(base + "/mail/inbox")
            times.append(page.evaluate(
                "() => { const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime; }"))
        b.close()
    print(f"{'chromium full load of inbox, ' + str(n) + '-message mailbox':55s} "
          f"{statistics.median(times):8.1f} ms (median of {reps})")


if __name__ == "__main__":
    sys.exit(main())
