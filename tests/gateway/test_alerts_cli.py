"""`mailgate alerts test` with real channels: a webhook receiver (apprise ``json://``), a second
apprise URL where nothing listens, and alert mail to an alternate address whose MX (dnsmasq) is an
aiosmtpd sink. The gateway runs as a process and delivers the alert mail the CLI committed into
its spool; the CLI prints one line per channel and exits 1 because one channel failed."""
from __future__ import annotations

import glob
import json
import re

import pytest

from tests.conftest import config_toml
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port

pytestmark = pytest.mark.e2e

ALT_MX = "127.0.0.61"


def test_alerts_test_reports_each_channel(peers, tmp_path, webhook):
    hook_port, hook_dir = webhook
    dead_port = free_port()
    alt = peers.sink(ALT_MX, free_port(), "alt-mx")
    with DnsServer(mx={"alt.test": [(10, "mx.alt.test")]}, a={"mx.alt.test": ALT_MX}) as dns:
        port = free_port()
        extra = (f'[continuity]\nmode = "off"\nalert_urls = ["json://ops:s3cr3t@127.0.0.1:{hook_port}/alert", '
                 f'"json://127.0.0.1:{dead_port}/alert"]\nalert_mail_to = ["oncall@alt.test"]\n')
        gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost="[127.0.0.1]:9",
                                       dns_port=dns.port, mx_port=alt.port, continuity=None, extra=extra),
                           port)
        p = gw.cli("alerts", "test", "--wait", "20", check=False)
    lines = p.stdout.splitlines()
    print(p.stdout)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert re.match(r"^OK +continuity\.alert_urls\[0\] json://\*\*\*  sent$", lines[0]), lines
    assert re.match(r"^FAIL +continuity\.alert_urls\[1\] json://\*\*\*  not sent", lines[1]), lines
    assert any(re.match(r"^OK +continuity\.alert_mail_to oncall@alt\.test  delivered \(250 ", l)
               for l in lines), lines
    hooks = [json.load(open(f)) for f in sorted(glob.glob(str(hook_dir / "*.json")))]
    assert [h["title"] for h in hooks] == ["test alert from mailgate on gw.test"]
    [(env, data)] = alt.messages()
    assert (env["mail_from"], env["rcpt_tos"]) == ("mailgate@gw.test", ["oncall@alt.test"])
    assert b"Subject: [mailgate] test alert from mailgate on gw.test" in data
    assert "s3cr3t" not in p.stdout + p.stderr            # the URL's token is never printed


def test_alerts_test_without_a_channel_fails(peers, tmp_path):
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost="[127.0.0.1]:9"), port)
    p = gw.cli("alerts", "test", check=False)
    assert p.returncode == 1 and p.stdout.startswith("FAIL  no alert channel configured")
