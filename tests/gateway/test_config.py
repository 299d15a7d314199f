"""Configuration (gateway/config.py): defaults that run as they are, bad files rejected with the
file and the dotted key named, relative paths resolved against the file's directory, the shipped
example loads, and `mailgate check-config` exits 2 on a bad file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.config import Config, ConfigError, load
from tests.conftest import ROOT

EXAMPLE = ROOT / "deploy" / "mailgate.example.toml"
EXIT_CONFIG_ERROR = 2


def write(tmp_path: Path, text: str, name: str = "mailgate.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults():
    cfg = load(None)
    assert cfg.source == "<defaults>"
    assert cfg.smtp.listen == ["127.0.0.1:2525"]
    assert cfg.smtp.max_recipients == 1000 and cfg.smtp.max_line_length == 65536
    assert cfg.relay.accepted_domains == ["example.com"] and cfg.relay.trusted_networks == []
    assert cfg.directory.file is None                       # no filtering unless configured
    assert cfg.routing.smarthost_tls == "opportunistic"
    assert cfg.delivery.minimal_backoff == 300.0 and cfg.delivery.maximal_backoff == 4000.0
    assert cfg.delivery.maximal_lifetime == 5 * 86400.0     # Postfix's queue lifetime
    assert cfg.spool_path == Path("data") / "spool.db"


def test_an_empty_file_is_the_defaults(tmp_path):
    p = write(tmp_path, "")
    cfg = load(p)
    assert cfg.source == str(p)
    assert cfg.smtp == Config().smtp and cfg.delivery == Config().delivery
    assert cfg.server.data_dir == tmp_path / "data"          # the default is relative to the file too


@pytest.mark.parametrize("text,key,words", [
    ("[smtp]\nbogus = 1\n", "smtp.bogus", "Extra inputs are not permitted"),
    ("[smpt]\nlisten = []\n", "smpt", "Extra inputs are not permitted"),
    ("[delivery]\nconnect_timeout = 5\nretry_forever = true\n", "delivery.retry_forever", "Extra"),
    ("[smtp]\nmax_recipients = 10\n", "smtp.max_recipients", "greater than or equal to 100"),
    ("[smtp]\nmax_line_length = \"long\"\n", "smtp.max_line_length", "valid integer"),
    ("[routing]\nsmarthost_tls = \"sometimes\"\n", "routing.smarthost_tls", "'opportunistic'"),
    ("[relay]\ntrusted_networks = [\"10.0.0.0/33\"]\n", "relay.trusted_networks[0]", "not a valid CIDR"),
    ("[delivery]\nminimal_backoff = 0\n", "delivery.minimal_backoff", "greater than 0"),
    ("[log]\nlevel = \"loud\"\n", "log.level", "'debug'"),
    ("[smtp]\nlisten = [\"2525\"]\n", "smtp.listen", "host:port"),
    ("[routing]\ndefault_smarthost = \"[10.0.0.1]:25x\"\n", "routing.default_smarthost", "bad port"),
    ("[routing]\ndefault_smarthost = \"smart host.test\"\n", "routing.default_smarthost", "bad host"),
    ("[[routing.routes]]\ndomain = \"example.com\"\nsmarthost = \"[mail.example.com\"\n",
     "routing.routes[0].smarthost", "unclosed bracket"),
    ("[[routing.routes]]\ndomain = \"example.com\"\nsmarthost = \"mail..example.com\"\n",
     "routing.routes[0].smarthost", "bad host"),
    ("[relay]\naccepted_domains = [\"xn--zz.example\"]\n", "relay.accepted_domains",
     "not a valid domain: 'xn--zz.example'"),
    ("[relay]\naccepted_domains = [\"exa mple.com\"]\n", "relay.accepted_domains",
     "not a valid domain"),
    ("[[smtp.listeners]]\naddress = \"10.0.0.21:25\"\nproxy_protocol = true\n",
     "smtp.listeners[0]", "needs proxy_trusted"),
    ("[[smtp.listeners]]\naddress = \"10.0.0.21:25\"\nproxy_trusted = [\"10.0.0.5\"]\n",
     "smtp.listeners[0]", "only used with proxy_protocol = true"),
    ("[[smtp.listeners]]\naddress = \"10.0.0.21:25\"\nproxy_protocol = true\n"
     "proxy_trusted = [\"0.0.0.0/0\"]\n", "smtp.listeners[0].proxy_trusted", "trusts every address"),
    ("[[smtp.listeners]]\naddress = \"10.0.0.21:25\"\nproxy_protocol = true\n"
     "proxy_trusted = [\"10.0.0.5/8\"]\n", "smtp.listeners[0].proxy_trusted", "did you mean 10.0.0.0/8"),
    ("[[smtp.listeners]]\naddress = \"10.0.0.21:25\"\nproxy_protocol = true\n"
     "proxy_trusted = [\"10.0.0.5\"]\nproxy_timeout = 1.0\n", "smtp.listeners[0].proxy_timeout",
     "greater than or equal to 3"),
    ("[[smtp.listeners]]\naddress = \"25\"\n", "smtp.listeners[0].address", "host:port"),
    ("[smtp]\nlisten = [\"10.0.0.21:25\"]\n[[smtp.listeners]]\naddress = \"10.0.0.21:25\"\n",
     "smtp", "given twice"),
    ("[smtp]\nlisten = []\n", "smtp", "no SMTP listener"),
])
def test_bad_key_or_value_names_file_and_key(tmp_path, text, key, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: {key}"), msg
    assert words in msg


def test_every_error_is_reported_at_once(tmp_path):
    p = write(tmp_path, "[smtp]\nmax_recipients = 1\nbogus = 2\n[log]\nformat = \"xml\"\n")
    with pytest.raises(ConfigError) as exc:
        load(p)
    keys = sorted(line.split(": ")[1] for line in str(exc.value).splitlines())
    assert keys == ["log.format", "smtp.bogus", "smtp.max_recipients"]


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load(write(tmp_path, "[smtp\nlisten = 1\n", "broken.toml"))


def test_relative_paths_resolve_against_the_files_directory(tmp_path):
    etc = tmp_path / "etc" / "mailgate"
    etc.mkdir(parents=True)
    p = write(etc, "\n".join([
        "[server]", 'data_dir = "spool"',
        "[smtp]", 'tls_cert = "tls/cert.pem"', 'tls_key = "/abs/key.pem"',
        "[directory]", 'file = "../directory.csv"',
        "[routing]", 'smarthost_ca_file = "ca.pem"']))
    cfg = load(p)
    assert cfg.server.data_dir == etc / "spool"
    assert cfg.spool_path == etc / "spool" / "spool.db"
    assert cfg.smtp.tls_cert == etc / "tls" / "cert.pem"
    assert cfg.smtp.tls_key == Path("/abs/key.pem")            # absolute: unchanged
    assert cfg.directory.file == etc / "../directory.csv"
    assert cfg.routing.smarthost_ca_file == etc / "ca.pem"


def test_parse_without_base_keeps_paths():
    cfg = config_mod.parse({"server": {"data_dir": "rel"}}, "inline")
    assert cfg.server.data_dir == Path("rel") and cfg.source == "inline"


def test_the_shipped_example_loads():
    cfg = load(EXAMPLE)
    assert cfg.server.hostname == "mx1.example.com"
    assert cfg.smtp.listen == ["0.0.0.0:25", "[::]:25"]
    assert cfg.relay.trusted_networks == ["10.0.10.0/24"]
    assert cfg.server.data_dir == Path("/var/lib/mailgate")
    defaults = Config()
    # the example says "every key shows its default": where it does not differ on purpose, it agrees
    assert cfg.delivery.model_dump() == {**defaults.delivery.model_dump(), "connect_timeout": 5.0}
    assert cfg.dns == defaults.dns and cfg.log == defaults.log


def test_config_is_immutable():
    cfg = load(None)
    with pytest.raises(Exception):
        cfg.smtp.max_recipients = 5


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_check_config_cli_exits_2_naming_file_and_key(tmp_path):
    bad = write(tmp_path, "[smtp]\nmax_recipients = 10\n", "bad.toml")
    out = _cli("--config", str(bad), "check-config")
    assert out.returncode == EXIT_CONFIG_ERROR
    # exactly the two lines (a traceback or any other noise would change them), nothing on stdout
    assert out.stderr.splitlines() == ["mailgate: configuration error:",
        f"{bad}: smtp.max_recipients: Input should be greater than or equal to 100"], out.stderr
    assert out.stdout == ""


def test_check_config_cli_prints_the_resolved_config(tmp_path):
    good = write(tmp_path, '[server]\nhostname = "gw.test"\ndata_dir = "d"\n')
    out = _cli("--config", str(good), "check-config")
    assert out.returncode == 0, out.stderr
    assert f'"data_dir": "{tmp_path / "d"}"' in out.stdout
    assert '"hostname": "gw.test"' in out.stdout


def test_accepted_domains_are_idna_normalised_at_load(tmp_path):
    """issue 6 item 5: one normal form (U-label, idna UTS #46) whichever way the admin wrote it."""
    p = write(tmp_path, '[relay]\naccepted_domains = ["Example.COM.", "XN--BCHER-KVA.example",'
                        ' "MAÑANA.example", "mañana.example"]\n')
    assert load(p).relay.accepted_domains == ["example.com", "bücher.example", "mañana.example"]


# --- issue 6 item 11: values that passed validation and broke `serve` later, and secrets ---

@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "0.0.0.0/1", "128.0.0.0/1", "8.0.0.0/7",
                                  "11.0.0.0/8", "1.0.0.0/12", "2000::/3", "fc00::/7",
                                  "2001:db8::/31"])
def test_trusted_networks_that_make_an_open_relay_are_refused(tmp_path, cidr):
    p = write(tmp_path, f'[relay]\ntrusted_networks = ["10.0.10.0/24", "{cidr}"]\n')
    with pytest.raises(ConfigError) as exc:
        load(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: relay.trusted_networks[1]: "), msg
    assert cidr in msg and "open relay" in msg, msg


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "192.0.2.0/24",
                                  "198.51.100.7", "fd00::/8", "2001:db8::/32", "::1"])
def test_trusted_networks_of_a_site_are_accepted(tmp_path, cidr):
    cfg = load(write(tmp_path, f'[relay]\ntrusted_networks = ["{cidr}"]\n'))
    assert cfg.relay.trusted_networks == [cidr]


def test_trusted_network_with_host_bits_is_refused_at_load_not_at_serve(tmp_path):
    p = write(tmp_path, '[relay]\ntrusted_networks = ["10.0.0.1/8"]\n')
    with pytest.raises(ConfigError, match=r"relay\.trusted_networks\[0\]: .*did you mean 10\.0\.0\.0/8"):
        load(p)


def test_serve_with_an_open_relay_network_exits_2_without_a_traceback(tmp_path):
    p = write(tmp_path, '[server]\ndata_dir = "d"\n[relay]\ntrusted_networks = ["0.0.0.0/0"]\n')
    out = _cli("--config", str(p), "serve")
    assert out.returncode == EXIT_CONFIG_ERROR, out
    assert f"{p}: relay.trusted_networks[0]:" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "d").exists()                   # refused before anything was opened


def test_minimal_backoff_above_maximal_is_refused(tmp_path):
    p = write(tmp_path, "[delivery]\nminimal_backoff = 600\nmaximal_backoff = 300\n")
    with pytest.raises(ConfigError) as exc:
        load(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: delivery.minimal_backoff: "), msg
    assert "maximal_backoff" in msg and "600" in msg and "300" in msg, msg
    assert load(write(tmp_path, "[delivery]\nminimal_backoff = 300\nmaximal_backoff = 300\n"))


def test_bad_apprise_url_names_the_key_and_file_not_the_secret(tmp_path):
    p = write(tmp_path, '[continuity]\nalert_urls = ["json://hooks.example.test/ok",'
                        ' "nosuchscheme://user:S3CRETpass@host.test/T0KEN123"]\n')
    with pytest.raises(ConfigError) as exc:
        load(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: continuity.alert_urls[1]: "), msg
    assert "nosuchscheme" in msg
    for secret in ("S3CRETpass", "T0KEN123", "user:", "host.test"):
        assert secret not in msg, msg
    out = _cli("--config", str(p), "check-config")
    assert out.returncode == EXIT_CONFIG_ERROR and "Traceback" not in out.stderr
    assert "S3CRETpass" not in out.stderr and "T0KEN123" not in out.stderr


def test_check_config_redacts_secrets(tmp_path):
    p = write(tmp_path, "\n".join([
        "[admin]", 'token = "adm-T0K3N-value"',
        "[probes]", "roundtrip = true", 'roundtrip_to = "canary@example.com"',
        'roundtrip_return = "probe@gw.example.net"', 'roundtrip_username = "probe"',
        'roundtrip_password = "pw-S3CR3T-value"',
        'http = { owa = "https://mon:HTTP-PASS@owa.example.com/owa/healthcheck.htm" }',
        "[continuity]", 'alert_urls = ["json://hook:URL-S3CRET@hooks.example.test/TOKENPATH"]']))
    out = _cli("--config", str(p), "check-config")
    assert out.returncode == 0, out.stderr
    for secret in ("adm-T0K3N-value", "pw-S3CR3T-value", "URL-S3CRET", "TOKENPATH", "HTTP-PASS"):
        assert secret not in out.stdout, secret
    import json
    shown = json.loads(out.stdout)
    assert shown["admin"]["token"] == "***" and shown["probes"]["roundtrip_password"] == "***"
    assert shown["continuity"]["alert_urls"] == ["json://***"]
    assert shown["probes"]["http"]["owa"] == "https://***@owa.example.com/owa/healthcheck.htm"
    assert shown["probes"]["roundtrip_username"] == "probe"      # not a secret
    empty = json.loads(_cli("--config", str(write(tmp_path, "", "e.toml")), "check-config").stdout)
    assert empty["admin"]["token"] == ""                        # unset stays visibly unset


def _directory(tmp_path) -> Path:
    d = tmp_path / "directory.json"
    d.write_text('{"mailboxes": ["bob@example.com", '
                 '{"address": "alice@example.com", "aliases": ["probe-alias@example.com"]}]}')
    return d


@pytest.mark.parametrize("ret", ["bob@example.com", "BOB@example.com", "probe-alias@example.com"])
def test_roundtrip_return_in_the_directory_is_refused(tmp_path, ret):
    d = _directory(tmp_path)
    p = write(tmp_path, "\n".join([
        "[directory]", f'file = "{d}"', "[probes]", "roundtrip = true",
        'roundtrip_to = "canary@example.com"', f'roundtrip_return = "{ret}"']))
    with pytest.raises(ConfigError) as exc:
        load(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: probes.roundtrip_return: "), msg
    assert str(d) in msg and "directory" in msg, msg
    ok = write(tmp_path, "\n".join([
        "[directory]", f'file = "{d}"', "[probes]", "roundtrip = true",
        'roundtrip_to = "canary@example.com"', 'roundtrip_return = "mailgate-probe@example.com"']),
        "ok.toml")
    assert load(ok).probes.roundtrip_return == "mailgate-probe@example.com"


def test_queue_commands_keep_working_when_the_directory_later_lists_the_return_address(tmp_path):
    """serve and check-config refuse it; the queue and status commands, which read the spool
    of a gateway that is already running (its probe mailbox disabled), do not."""
    d = _directory(tmp_path)
    p = write(tmp_path, "\n".join([
        "[server]", f'data_dir = "{tmp_path / "data"}"', "[directory]", f'file = "{d}"',
        "[probes]", "roundtrip = true", 'roundtrip_to = "canary@example.com"',
        'roundtrip_return = "bob@example.com"']))
    assert load(p, check_files=False).probes.roundtrip_return == "bob@example.com"
    assert _cli("--config", str(p), "check-config").returncode == EXIT_CONFIG_ERROR
    out = _cli("--config", str(p), "queue", "list")
    assert out.returncode == 0 and "configuration error" not in out.stderr, out


def test_proxy_listeners_next_to_plain_ones(tmp_path):
    cfg = load(write(tmp_path, '[smtp]\nlisten = ["127.0.0.1:2525"]\n[[smtp.listeners]]\n'
                                'address = "10.0.0.21:25"\nproxy_protocol = true\n'
                                'proxy_trusted = ["10.0.0.5", "10.0.1.0/24"]\n'))
    plain, proxied = cfg.smtp.all_listeners()
    assert (plain.address, plain.proxy_protocol) == ("127.0.0.1:2525", False)
    assert (proxied.address, proxied.proxy_protocol, proxied.proxy_timeout) == ("10.0.0.21:25", True, 5.0)
    assert proxied.proxy_trusted == ["10.0.0.5", "10.0.1.0/24"]
