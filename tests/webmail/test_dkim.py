"""DKIM for the webmail: `mailgate dkim keygen` writes both kinds of key (mode 0600) and prints
the TXT records; a message signed with both verifies with dkimpy against a real dnsmasq serving
exactly the printed records; an injected second Subject (or an added Cc) fails both."""
from __future__ import annotations

import re
import stat
import subprocess
import sys
from types import SimpleNamespace

import dkim
import dns.resolver
import pytest

from tests.conftest import ROOT
from tests.support.dnsserver import DnsServer
from webmail import dkim_sign

MESSAGE = (b"From: alice@example.test\r\nTo: bob@other.test\r\nSubject: quarterly figures\r\n"
           b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <abc.123@example.test>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
           b"Content-Transfer-Encoding: 7bit\r\n\r\nthe figures are attached.\r\n")


def keygen(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "gateway.cli", "dkim", "keygen", *args,
                           "--dir", str(tmp_path / "keys")], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def parse_output(out: str):
    """(TXT owner name, [character-strings], {toml key: value}) from keygen's output."""
    m = re.search(r"^(\S+) IN TXT (.+)$", out, re.M)
    name, strings = m.group(1), re.findall(r'"([^"]*)"', m.group(2))
    toml = dict(re.findall(r'^(\w+) = "([^"]*)"$', out, re.M))
    return name, strings, toml


def dnsfunc_for(port: int):
    res = dns.resolver.Resolver(configure=False)
    res.nameservers, res.port = ["127.0.0.1"], port

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            ans = res.resolve(name, "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(ans[0].strings)
    return dnsfunc


@pytest.fixture
def published(tmp_path):
    """Both keys made by the CLI and a dnsmasq serving the printed TXT records."""
    rsa = keygen(tmp_path, "example.test", "rsa2026")
    ed = keygen(tmp_path, "example.test", "ed2026", "--algorithm", "ed25519-sha256")
    assert rsa.returncode == 0 and ed.returncode == 0, rsa.stderr + ed.stderr
    records, printed, keys = {}, {}, []
    for out in (rsa.stdout, ed.stdout):
        name, strings, toml = parse_output(out)
        printed[name] = strings
        records[name] = "".join(strings)   # dnsserver splits it into 255-byte strings again
        keys.append(SimpleNamespace(**toml))
    with DnsServer(txt=records, local="test") as server:
        yield SimpleNamespace(rsa=rsa.stdout, ed=ed.stdout, records=printed, keys=keys,
                              dnsfunc=dnsfunc_for(server.port))


def verify_all(message: bytes, dnsfunc) -> list[bool]:
    d = dkim.DKIM(message)
    n = len(re.findall(rb"^DKIM-Signature:", message, re.M | re.I))
    out = []
    for i in range(n):
        try:
            out.append(d.verify(idx=i, dnsfunc=dnsfunc))
        except dkim.ValidationError:      # body hash mismatch is raised, not returned
            out.append(False)
    return out


def test_keygen_writes_both_kinds_and_prints_the_records(published, tmp_path):
    rsa_file = tmp_path / "keys" / "example.test.rsa2026.rsa.key"
    ed_file = tmp_path / "keys" / "example.test.ed2026.ed25519.key"
    for f in (rsa_file, ed_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert rsa_file.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    rsa_txt = published.records["rsa2026._domainkey.example.test"]
    assert len(rsa_txt) == 2 and all(len(s) <= 255 for s in rsa_txt)   # 2048-bit key: split
    assert "".join(rsa_txt).startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    assert published.records["ed2026._domainkey.example.test"][0].startswith("v=DKIM1; k=ed25519; p=")
    assert 'algorithm = "ed25519-sha256"' in published.ed and "[[webmail.dkim]]" in published.ed
    # it never overwrites a key
    again = keygen(tmp_path, "example.test", "rsa2026")
    assert again.returncode == 1 and "exists" in again.stderr


def test_both_signatures_verify_and_a_second_subject_breaks_them(published):
    keys = dkim_sign.keys_for(published.keys, "EXAMPLE.test")
    assert [k.algorithm for k in keys] == ["rsa-sha256", "ed25519-sha256"]
    signed = dkim_sign.sign(MESSAGE, keys)
    assert signed.endswith(MESSAGE)
    sigs = re.findall(rb"^DKIM-Signature:.*?(?=^\S)", signed, re.M | re.S)
    assert len(sigs) == 2
    for s in sigs:
        flat = b"".join(s.split())
        assert b"c=relaxed/relaxed" in flat and b"l=" not in flat.replace(b"subject", b"")
        h = re.search(rb"h=([^;]+)", flat).group(1).split(b":")
        assert h.count(b"subject") == 2 and h.count(b"from") == 2 and h.count(b"cc") == 1
    assert b"a=ed25519-sha256" in b"".join(signed.split())
    assert verify_all(signed, published.dnsfunc) == [True, True]

    # the attack over-signing stops: a second Subject added above the signed one (receivers show
    # the first); without over-signing this one still verifies (checked with dkimpy 1.1.8)
    injected = b"Subject: urgent: wire the money\r\n" + signed
    assert verify_all(injected, published.dnsfunc) == [False, False]
    head, body = signed.split(b"\r\n\r\n", 1)
    appended = head + b"\r\nSubject: urgent: wire the money\r\n\r\n" + body
    assert verify_all(appended, published.dnsfunc) == [False, False]
    added_cc = b"Cc: mallory@evil.test\r\n" + signed
    assert verify_all(added_cc, published.dnsfunc) == [False, False]
    changed_body = signed.replace(b"attached", b"deleted")
    assert verify_all(changed_body, published.dnsfunc) == [False, False]


def test_a_bad_key_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    key = dkim_sign.SigningKey("example.test", "s", "ed25519-sha256", bad)
    with pytest.raises(dkim_sign.DkimError, match="32-byte Ed25519 seed"):
        dkim_sign.sign(MESSAGE, [key])
    with pytest.raises(ValueError):
        dkim_sign.sign(MESSAGE.replace(b"\r\n", b"\n"), [key])


def test_check_config_names_an_unreadable_dkim_key(tmp_path, published):
    good = published.keys[1]
    bad = tmp_path / "missing.key"
    toml = tmp_path / "mailgate.toml"
    toml.write_text(f"""[webmail]
[[webmail.dkim]]
domain = "example.test"
selector = "ed2026"
key_file = "{good.key_file}"
algorithm = "ed25519-sha256"
[[webmail.dkim]]
domain = "example.test"
selector = "gone"
key_file = "{bad}"
algorithm = "rsa-sha256"
""")
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(toml), "check-config"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert "webmail.dkim[1].key_file" in r.stderr and "cannot read DKIM key" in r.stderr
    assert "webmail.dkim[0]" not in r.stderr
