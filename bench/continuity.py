#!/usr/bin/env python3
"""Continuity engine figures: detection time, false activations under flapping, replay throughput.

Real processes throughout (tests/support/peers.py): the gateway (`mailgate serve`), aiosmtpd sinks
standing in for Exchange, the CLI for the admin. Times come from the gateway's own log
(``continuity_transition`` and ``probe`` lines, UTC ISO stamps) against the bench's wall clock.

    python3 bench/continuity.py                          # everything (about 15-25 minutes)
    python3 bench/continuity.py --only detect-fast,flap  # parts: detect-default, detect-fast,
                                                         #   flap, replay, replay-default
    python3 bench/continuity.py --only replay --replay-n 10000 --json out.json

Parts:
  detect-*   sink killed (SIGKILL on even runs, SIGTERM on odd) at a random phase of the probe
             interval; detection = ts of ``dst='continuity'`` minus the kill time. Each run has
             a fresh gateway and sink.
  flap       at the aggressive setting, ~60 s each: (a) a TCP proxy answering 421 to every third
             connection (so every third probe fails), (b) the sink process killed and restarted
             in a 1-s-up / 0.5-s-down cycle, (c) outages of 3 s (< enter_after 5 s) every ~10 s.
             Counts transitions into continuity (goal 0) and into degraded (informational).
  replay*    N messages injected by 8 concurrent untrusted SMTP sessions to example.com during an
             admin event (`mailgate continuity start`), then `mailgate continuity stop`; msg/s
             from the stop to the last message stored by the sink; duplicates and missing by
             the unique token in each Subject.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import smtplib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Peers, config_toml  # noqa: E402
from tests.support.flakyproxy import FlakyProxy  # noqa: E402
from tests.support.peers import free_port, wait_for  # noqa: E402

AGGRESSIVE = dict(enter_after=5.0, smtp_interval=1.0, tick=0.5)
DEFAULTS = dict(enter_after=40.0, smtp_interval=10.0, tick=1.0)
TRANSITION = re.compile(r"ts='([^']+)' level='\w+' event='continuity_transition' src='(\w+)' dst='(\w+)'")
PROBE = re.compile(r"ts='([^']+)' level='\w+' event='probe' probe='[^']*' ok=(True|False)")


def ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def transitions(gw) -> list[tuple[float, str, str]]:
    return [(ts(t), a, b) for t, a, b in TRANSITION.findall(gw.log_text())]


def probes(gw) -> list[tuple[float, bool]]:
    return [(ts(t), ok == "True") for t, ok in PROBE.findall(gw.log_text())]


def gateway(peers, smarthost_port, *, enter_after, smtp_interval, tick, hold_down=5.0, name="gw",
            replay_rate=None, replay_concurrency=None, smtp_timeout=None):
    port = free_port()
    extra = ["[continuity]", 'mode = "automatic"', f"enter_after = {enter_after}",
             f"hold_down = {hold_down}", f"tick = {tick}"]
    if replay_rate is not None:
        extra.append(f"replay_rate = {replay_rate}")
    if replay_concurrency is not None:
        extra.append(f"replay_concurrency = {replay_concurrency}")
    extra += ["[probes]", f"smtp_interval = {smtp_interval}", 'canary_rcpt = "postmaster@example.com"']
    if smtp_timeout is not None:
        extra.append(f"smtp_timeout = {smtp_timeout}")
    toml = config_toml(port=port, data_dir=peers.base / name / "data",
                       smarthost=f"[127.0.0.1]:{smarthost_port}", continuity=None,
                       extra="\n".join(extra) + "\n")
    return peers.gateway(toml, port, name=name)


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "median": statistics.median(xs) if xs else None,
            "min": min(xs) if xs else None, "max": max(xs) if xs else None}


# ---------------------------------------------------------------- detection


def detect_once(base: Path, i: int, s: dict) -> dict:
    peers = Peers(base / f"run{i}")
    peers.base.mkdir(parents=True)
    try:
        sink = peers.sink(name="exchange")
        gw = gateway(peers, sink.port, **s, hold_down=300.0)
        wait_for(lambda: any(ok for _, ok in probes(gw)), 30, what="a passing probe")
        time.sleep(random.uniform(0, s["smtp_interval"]))     # random phase against the probe timer
        how = "SIGKILL" if i % 2 == 0 else "SIGTERM"
        killed = time.time()
        sink.kill() if how == "SIGKILL" else sink.stop()
        limit = s["enter_after"] + 2 * s["smtp_interval"] + 10 * s["tick"] + 10
        entered = wait_for(lambda: [t for t, _, dst in transitions(gw) if dst == "continuity"], limit,
                           interval=0.2, what="continuity")[0]
        first_fail = min(t for t, ok in probes(gw) if not ok and t >= killed)
        return {"run": i, "signal": how, "detection_s": round(entered - killed, 3),
                "first_failed_probe_s": round(first_fail - killed, 3),
                "fail_to_continuity_s": round(entered - first_fail, 3)}
    finally:
        peers.close()


def detect(base: Path, label: str, s: dict, n: int, parallel: int) -> dict:
    with ThreadPoolExecutor(parallel) as ex:
        runs = list(ex.map(lambda i: detect_once(base / label, i, s), range(n)))
    for r in runs:
        print(f"  {label} run {r['run']}: {r['detection_s']:.2f} s ({r['signal']}; first failed probe "
              f"+{r['first_failed_probe_s']:.2f} s)", flush=True)
    return {"settings": s, "parallel": parallel, "runs": runs,
            "detection_s": summary([r["detection_s"] for r in runs])}


# ---------------------------------------------------------------- flapping


def flap_scenario(base: Path, kind: str, seconds: float) -> dict:
    peers = Peers(base / kind)
    peers.base.mkdir(parents=True)
    proxy = None
    try:
        sink = peers.sink(name="exchange")
        target = sink.port
        if kind == "every-third-421":
            proxy = FlakyProxy(sink.port, 3)
            target = proxy.port
        gw = gateway(peers, target, **AGGRESSIVE, smtp_timeout=1.0)
        wait_for(lambda: any(ok for _, ok in probes(gw)), 30, what="a passing probe")
        t0, down, outages = time.time(), 0.0, 0
        end = t0 + seconds
        while time.time() < end:
            if kind == "every-third-421":
                time.sleep(1)
                continue
            up, gone = (1.0, 0.5) if kind == "cycle-1s-up-0.5s-down" else (7.0, 3.0)
            time.sleep(up)
            k = time.time()
            sink.kill()
            time.sleep(gone)
            sink.start()                          # returns once it answers 220 again
            down += time.time() - k
            outages += 1
        time.sleep(3 * AGGRESSIVE["tick"] + AGGRESSIVE["smtp_interval"])
        tr = [x for x in transitions(gw) if x[0] >= t0]
        pr = [ok for t, ok in probes(gw) if t >= t0]
        alerts = [ts(x) for x in re.findall(r"ts='([^']+)' level='\w+' event='alert'", gw.log_text())]
        return {"scenario": kind, "seconds": round(time.time() - t0, 1), "outages": outages,
                "mean_outage_s": round(down / outages, 2) if outages else None,
                "probes": len(pr), "probes_failed": pr.count(False),
                "into_degraded": sum(d == "degraded" for _, _, d in tr),
                "into_continuity": sum(d == "continuity" for _, _, d in tr),
                "alerts_sent": sum(x >= t0 for x in alerts),
                "final_mode": gw.cli("continuity", "status").stdout.split()[1]}
    finally:
        if proxy:
            proxy.close()
        peers.close()


def flap(base: Path, seconds: float) -> dict:
    out = []
    for kind in ("every-third-421", "cycle-1s-up-0.5s-down", "outage-3s-every-10s"):
        r = flap_scenario(base / "flap", kind, seconds)
        print(f"  flap {kind}: {r['probes_failed']}/{r['probes']} probes failed, "
              f"{r['into_degraded']} x degraded, {r['into_continuity']} x continuity, {r['alerts_sent']} alerts",
              flush=True)
        out.append(r)
    return {"settings": AGGRESSIVE, "scenarios": out}


# ---------------------------------------------------------------- replay


def inject(port: int, n: int, sessions: int = 8) -> list[str]:
    def one(k):
        toks = []
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
            for j in range(k, n, sessions):
                tok = f"r{j:06d}-{random.getrandbits(48):012x}"
                c.sendmail("alice@remote.test", ["bob@example.com"],
                           f"Subject: {tok}\r\nMessage-ID: <{tok}@remote.test>\r\n\r\nbody {tok}\r\n".encode())
                toks.append(tok)
        return toks
    with ThreadPoolExecutor(sessions) as ex:
        return [t for ts_ in ex.map(one, range(sessions)) for t in ts_]


def held(gw) -> int:
    m = re.search(r"held:\s+(\d+)", gw.cli("continuity", "status").stdout)
    return int(m.group(1)) if m else -1


def replay(base: Path, label: str, n: int, cont: dict, limit: float) -> dict:
    peers = Peers(base / label)
    peers.base.mkdir(parents=True)
    try:
        sink = peers.sink(name="exchange")
        gw = gateway(peers, sink.port, **AGGRESSIVE | {"tick": cont.get("tick", 1.0)},
                     replay_rate=cont.get("replay_rate"), replay_concurrency=cont.get("replay_concurrency"))
        assert gw.cli("continuity", "start", "--reason", "bench").stdout.strip() == "ok: continuity"
        t = time.time()
        sent = inject(gw.port, n)
        inject_s = time.time() - t
        wait_for(lambda: held(gw) >= n, 120, interval=0.5, what=f"{n} held")
        assert sink.count() == 0
        stop = time.time()
        assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
        try:
            wait_for(lambda: sink.count() >= n, limit, interval=0.5, what="replay")
            wait_for(lambda: [1 for *_, d in transitions(gw) if d == "normal"], 30, what="normal")
        except AssertionError:
            pass                                   # report what arrived within the limit
        time.sleep(1)
        files = sorted(sink.dir.glob("*.json"))
        last = max((f.stat().st_mtime for f in files), default=stop)
        got = []
        for f in files:
            m = re.search(rb"^Subject: (\S+)", f.with_suffix(".eml").read_bytes(), re.M)
            got.append(m.group(1).decode() if m else "?")
        dup = len(got) - len(set(got))
        missing = len(set(sent) - set(got))
        secs = last - stop
        return {"label": label, "n": n, "settings": cont, "inject_s": round(inject_s, 1),
                "inject_msg_s": round(n / inject_s, 1), "replay_s": round(secs, 1),
                "replay_msg_s": round(len(got) / secs, 1) if secs > 0 else None,
                "delivered": len(got), "duplicates": dup, "missing": missing,
                "normal_again": any(d == "normal" for *_, d in transitions(gw))}
    finally:
        peers.close()


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="detect-default,detect-fast,flap,replay,replay-default")
    ap.add_argument("--n-default", type=int, default=3)
    ap.add_argument("--n-fast", type=int, default=10)
    ap.add_argument("--flap-seconds", type=float, default=60.0)
    ap.add_argument("--replay-n", type=int, default=10000)
    ap.add_argument("--replay-concurrency", type=int, help="for the replay part (default: the product's)")
    ap.add_argument("--replay-limit", type=float, default=900.0, help="seconds to wait for a replay")
    ap.add_argument("--json", default="bench/continuity-results.json")
    a = ap.parse_args()
    parts = a.only.split(",")
    base = Path(tempfile.mkdtemp(prefix="mailgate-continuity-"))
    print(f"work dir {base}", flush=True)
    res: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv}
    if "detect-default" in parts:        # minutes per run: run them side by side
        res["detect_default"] = detect(base, "default", DEFAULTS, a.n_default, parallel=a.n_default)
    if "detect-fast" in parts:
        res["detect_fast"] = detect(base, "fast", AGGRESSIVE, a.n_fast, parallel=1)
    if "flap" in parts:
        res["flap"] = flap(base, a.flap_seconds)
    if "replay" in parts:
        cont = {"replay_rate": 2000.0}
        if a.replay_concurrency:
            cont["replay_concurrency"] = a.replay_concurrency
        res["replay"] = replay(base, "replay-rate2000", a.replay_n, cont, a.replay_limit)
    if "replay-default" in parts:
        res["replay_default"] = replay(base, "replay-defaults", a.replay_n, {}, a.replay_limit)
    Path(a.json).write_text(json.dumps(res, indent=2))
    print("\npart              figure")
    for k in ("detect_default", "detect_fast"):
        if k in res:
            d = res[k]["detection_s"]
            print(f"{k:<17} detection median {d['median']:.2f} s, max {d['max']:.2f} s (N={d['n']})")
    for s in res.get("flap", {}).get("scenarios", []):
        print(f"{'flap':<17} {s['scenario']}: {s['into_continuity']} into continuity, "
              f"{s['into_degraded']} into degraded, {s['probes_failed']}/{s['probes']} probes failed, "
              f"{s['alerts_sent']} alerts")
    for k in ("replay", "replay_default"):
        if k in res:
            r = res[k]
            print(f"{k:<17} {r['replay_msg_s']} msg/s ({r['delivered']}/{r['n']} in {r['replay_s']} s), "
                  f"duplicates {r['duplicates']}, missing {r['missing']}; intake {r['inject_msg_s']} msg/s")
    print(f"JSON: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
