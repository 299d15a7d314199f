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
    ("[relay]\ntrusted_networks = [\"10.0.0.0/33\"]\n", "relay.trusted_networks", "not a CIDR network"),
    ("[delivery]\nminimal_backoff = 0\n", "delivery.minimal_backoff", "greater than 0"),
    ("[log]\nlevel = \"loud\"\n", "log.level", "'debug'"),
    ("[smtp]\nlisten = [\"2525\"]\n", "smtp.listen", "host:port"),
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
