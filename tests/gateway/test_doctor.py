"""`mailgate doctor` against real peers: dnsmasq serving good and bad zones (MX, A, TXT), aiosmtpd
sinks offering STARTTLS with trustme certificates (valid, expiring in 5 days, expired), an address
where nothing listens, and the CLI as a process (`python -m gateway.cli doctor --json`).

Each test points the configuration at one zone and asserts the level of the check it is about,
and the exit status (by the worst level). Measured here (printed): the run time of `doctor` on the
all-good zone."""
from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import time

import nacl.signing
import pytest
import trustme

from gateway.cli_dkim import generate
from tests.conftest import ROOT
from tests.support.dnsserver import DnsServer
from tests.support.peers import SinkProc, free_port
from tests.support.smalldisk import SmallDisk

pytestmark = pytest.mark.e2e

GOOD, EXPIRED, SOON, DEAD = "127.0.0.41", "127.0.0.42", "127.0.0.44", "127.0.0.43"


def rsa_key() -> tuple[bytes, str]:
    """(PEM private key, base64 SubjectPublicKeyInfo for p=), as `mailgate dkim keygen` makes them."""
    return generate("rsa-sha256")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("doctor")
    ours_pem, ours_p = rsa_key()
    _, other_p = rsa_key()
    (base / "rsa.pem").write_bytes(ours_pem)
    seed = nacl.signing.SigningKey.generate()
    (base / "ed.key").write_text(base64.b64encode(bytes(seed)).decode() + "\n")
    ed_p = base64.b64encode(bytes(seed.verify_key)).decode()

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    now = dt.datetime.now(dt.timezone.utc)
    certs = {"good": ca.issue_cert("mx1.smarthost.test"),
             "expired": ca.issue_cert("mx.tls-expired.test", not_before=now - dt.timedelta(days=400),
                                      not_after=now - dt.timedelta(days=1)),
             "soon": ca.issue_cert("mx.tls-soon.test", not_after=now + dt.timedelta(days=5))}
    for name, cert in certs.items():
        cert.private_key_and_cert_chain_pem.write_to_path(str(base / f"{name}.pem"))
    port = free_port()
    sinks = [SinkProc(addr, port, base / f"sink-{name}", name, "--tls",
                      f"{base / f'{name}.pem'},{base / f'{name}.pem'}").start()
             for name, addr in (("good", GOOD), ("expired", EXPIRED), ("soon", SOON))]
    mx = {d: [(10, "gw.test")] for d in ("good.test", "nospf.test", "loop.test", "softfail.test")}
    mx |= {"wrongmx.test": [(10, "mail.elsewhere.test")],
           "mixed.test": [(10, "gw.test"), (20, "backup.elsewhere.test")],
           "alias.test": [(10, "mx.alias.test")],
           "smarthost.test": [(10, "mx1.smarthost.test")], "tls-expired.test": [(10, "mx.tls-expired.test")],
           "tls-soon.test": [(10, "mx.tls-soon.test")], "dead.test": [(10, "mx.dead.test")]}
    a = {"gw.test": "127.0.0.1", "mx.alias.test": "127.0.0.1", "mail.elsewhere.test": "127.0.0.99",
         "backup.elsewhere.test": "127.0.0.98", "mx1.smarthost.test": GOOD,
         "mx.tls-expired.test": EXPIRED, "mx.tls-soon.test": SOON, "mx.dead.test": DEAD}
    spf_ok = "v=spf1 include:_spf.good.test -all"
    txt = {"good.test": [spf_ok, "google-site-verification=abc"],
           "_spf.good.test": "v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.0/24 ~all",
           "wrongmx.test": spf_ok, "mixed.test": spf_ok, "alias.test": "v=spf1 a:gw.test -all",
           "nospf.test": "v=spf1 ip4:192.0.2.1 mx:elsewhere.test ~all",
           "softfail.test": "v=spf1 ip4:192.0.2.1 ?all",
           "loop.test": "v=spf1 include:loop.test -all",
           "rsa._domainkey.good.test": f"v=DKIM1; k=rsa; p={ours_p}",
           "wrong._domainkey.good.test": f"v=DKIM1; k=rsa; p={other_p}",
           "ed._domainkey.good.test": f"v=DKIM1; k=ed25519; p={ed_p}"}
    directory = base / "directory.json"
    directory.write_text(json.dumps({"mailboxes": [f"user{i}@good.test" for i in range(3)]
                                     + ["postmaster@good.test"]}))
    with DnsServer(mx=mx, a=a, txt=txt) as dns:
        yield {"base": base, "dns": dns, "port": port, "directory": directory}
    for s in sinks:
        s.stop()


def doctor(world, name: str, *, domains=("good.test",), smarthost="smarthost.test", dkim=(),
           extra: str = "", data_dir=None, smtp: str = ""):
    """Run `mailgate doctor --json` on a configuration for ``domains``; (exit, {check: entry})."""
    base = world["base"]
    keys = "".join(f'[[webmail.dkim]]\ndomain = "good.test"\nselector = "{sel}"\n'
                   f'key_file = "{base / f}"\nalgorithm = "{alg}"\n' for sel, f, alg in dkim)
    conf = base / f"{name}.toml"
    conf.write_text(f"""
[server]
hostname = "gw.test"
data_dir = "{data_dir or base / name / 'data'}"
[smtp]
listen = ["127.0.0.1:{free_port()}"]
{smtp}
[relay]
accepted_domains = {json.dumps(list(domains))}
[directory]
file = "{world['directory']}"
[routing]
default_smarthost = "{smarthost}"
smarthost_port = {world['port']}
smarthost_tls = "required"
smarthost_verify_tls = true
smarthost_ca_file = "{base / 'ca.pem'}"
[dns]
nameservers = ["127.0.0.1"]
port = {world['dns'].port}
timeout = 1.0
lifetime = 2.0
[probes]
canary_rcpt = "postmaster@good.test"
[continuity]
alert_mail_to = ["oncall@alt.example"]
{extra}
[webmail]
enabled = true
{keys}""")
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(conf), "doctor", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    seconds = time.monotonic() - started
    assert p.stdout, p.stderr
    out = json.loads(p.stdout)
    assert out["worst"] == ("OK", "WARN", "FAIL")[p.returncode], (p.returncode, out)
    doctor.checks_seconds = out["seconds"]          # the checks alone, as doctor measured them
    return p.returncode, {c["check"]: c for c in out["checks"]}, seconds


def level(checks, prefix: str) -> str:
    found = [c for name, c in checks.items() if name.startswith(prefix)]
    assert len(found) == 1, (prefix, list(checks))
    return found[0]["level"]


def test_all_good_exits_zero(world):
    rc, checks, seconds = doctor(world, "good", dkim=[("rsa", "rsa.pem", "rsa-sha256"),
                                                      ("ed", "ed.key", "ed25519-sha256")])
    print(f"\ndoctor on the all-good zone: {doctor.checks_seconds:.2f}s of checks, {seconds:.2f}s "
          f"wall with the process start, {len(checks)} checks")
    assert {n: c["level"] for n, c in checks.items() if c["level"] != "OK"} == {}
    assert rc == 0
    assert set(checks) >= {"mx good.test", "spf good.test", "dkim rsa._domainkey.good.test",
                           "dkim ed._domainkey.good.test", "route good.test",
                           f"smarthost mx1.smarthost.test[{GOOD}]:{world['port']}",
                           "canary postmaster@good.test", "directory", "alerts", "disk"}
    assert "4 entries" in checks["directory"]["detail"]
    assert "valid for" in checks[f"smarthost mx1.smarthost.test[{GOOD}]:{world['port']}"]["detail"]
    assert "127.0.0.1: pass" in checks["spf good.test"]["detail"]


def test_mx_not_pointing_at_us_fails(world):
    rc, checks, _ = doctor(world, "mx", domains=("good.test", "wrongmx.test", "mixed.test", "alias.test"))
    assert level(checks, "mx wrongmx.test") == "FAIL"
    assert "mail.elsewhere.test" in checks["mx wrongmx.test"]["detail"]
    assert level(checks, "mx mixed.test") == "WARN"          # a second MX bypasses us
    assert level(checks, "mx alias.test") == "OK"             # another name for our address
    assert level(checks, "mx good.test") == "OK"
    assert rc == 2


def test_spf_missing_our_address_fails(world):
    rc, checks, _ = doctor(world, "spf", domains=("good.test", "nospf.test", "softfail.test",
                                                   "loop.test", "alias.test"))
    assert level(checks, "spf nospf.test") == "FAIL"
    assert "127.0.0.1: softfail" in checks["spf nospf.test"]["detail"]
    assert "ip4:127.0.0.1" in checks["spf nospf.test"]["fix"]
    assert level(checks, "spf softfail.test") == "FAIL"       # ?all: neutral is not allowed
    assert level(checks, "spf loop.test") == "FAIL"           # include loop: >10 lookups
    assert "more than 10 DNS-querying terms" in checks["spf loop.test"]["detail"]
    assert level(checks, "spf good.test") == "OK"             # through include:
    assert level(checks, "spf alias.test") == "OK"            # a:gw.test
    assert rc == 2


def test_dkim_record_wrong_fails(world):
    rc, checks, _ = doctor(world, "dkim", dkim=[("rsa", "rsa.pem", "rsa-sha256"),
                                                ("wrong", "rsa.pem", "rsa-sha256"),
                                                ("missing", "rsa.pem", "rsa-sha256"),
                                                ("ed", "rsa.pem", "rsa-sha256")])
    assert level(checks, "dkim wrong._domainkey") == "FAIL"
    assert level(checks, "dkim missing._domainkey") == "FAIL"
    assert level(checks, "dkim ed._domainkey") == "FAIL"       # k=ed25519 there, our key is RSA
    assert level(checks, "dkim rsa._domainkey") == "OK"
    rc2, checks2, _ = doctor(world, "dkim-ok", dkim=[("rsa", "rsa.pem", "rsa-sha256")])
    assert level(checks2, "dkim rsa._domainkey") == "OK"
    assert rc == 2 and rc2 == 0


def test_smarthost_with_an_expired_certificate_fails(world):
    rc, checks, _ = doctor(world, "expired", smarthost="tls-expired.test")
    host = checks[f"smarthost mx.tls-expired.test[{EXPIRED}]:{world['port']}"]
    assert host["level"] == "FAIL" and "expired" in host["detail"]
    assert level(checks, "route") == "OK"
    assert rc == 2


def test_smarthost_certificate_expiring_soon_warns(world):
    rc, checks, _ = doctor(world, "soon", smarthost="tls-soon.test")
    host = checks[f"smarthost mx.tls-soon.test[{SOON}]:{world['port']}"]
    assert host["level"] == "WARN" and "valid for" in host["detail"]
    assert level(checks, "canary") == "OK"
    assert rc == 1


def test_dead_smarthost_fails(world):
    rc, checks, seconds = doctor(world, "dead", smarthost="dead.test")
    assert level(checks, "smarthost mx.dead.test") == "FAIL"
    assert "connect" in checks[f"smarthost mx.dead.test[{DEAD}]:{world['port']}"]["detail"]
    assert level(checks, "canary") == "FAIL"
    rc2, checks2, _ = doctor(world, "unresolvable", smarthost="nxdomain.test")
    assert level(checks2, "route") == "FAIL"
    assert rc == rc2 == 2


def test_each_route_is_checked_on_its_own(world):
    rc, checks, _ = doctor(world, "routes", domains=("good.test", "mixed.test"),
                           extra='[[routing.routes]]\ndomain = "mixed.test"\nsmarthost = "dead.test"\n')
    assert level(checks, "route good.test") == level(checks, "route mixed.test") == "OK"
    assert level(checks, "smarthost mx1.smarthost.test") == "OK"
    assert level(checks, "smarthost mx.dead.test") == "FAIL"
    assert level(checks, "canary") == "OK"                  # one live smarthost accepts it
    assert rc == 2


def test_no_alert_channel_warns_and_text_output_has_one_line_per_check(world):
    rc, checks, _ = doctor(world, "noalerts", extra="")
    assert level(checks, "alerts") == "OK"
    conf = world["base"] / "noalerts.toml"
    conf.write_text(conf.read_text().replace('alert_mail_to = ["oncall@alt.example"]', ""))
    p = subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(conf), "doctor"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = p.stdout.splitlines()
    alerts = [l for l in lines if l.split()[1:2] == ["alerts"]]
    assert len(alerts) == 1 and alerts[0].startswith("WARN") and " — set continuity.alert_urls" in alerts[0]
    assert p.returncode == 1 and lines[-1].startswith("-- WARN")


@pytest.mark.skipif(not SmallDisk.available(), reason="needs root to mount a small tmpfs")
def test_disk_days_left_at_the_last_day_s_volume(world, tmp_path):
    from spool import NewMessage, db
    from spool.commit import insert_message
    with SmallDisk(tmp_path / "data", "64M"):
        conn = db.connect(tmp_path / "data" / "spool.db")

        def arrive(mib: int) -> None:
            for _ in range(mib):
                conn.execute("BEGIN IMMEDIATE")
                insert_message(conn, NewMessage("a@remote.test", ("u@good.test",), b"x" * (1 << 20)))
                conn.execute("COMMIT")
        arrive(3)
        kw = dict(data_dir=tmp_path / "data", smtp="max_message_size = 1048576")
        _, checks, _ = doctor(world, "disk-warn", **kw)
        disk = checks["disk"]
        assert "last 24 h: 3 messages" in disk["detail"] and "days left" in disk["detail"], disk
        assert disk["level"] == "WARN", disk                # ~55 MiB free / 6 MiB a day ≈ 9 days
        arrive(15)
        _, checks, _ = doctor(world, "disk-fail", **kw)
        assert checks["disk"]["level"] == "FAIL", checks["disk"]   # ~1 day left
        conn.close()
