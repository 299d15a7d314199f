"""``[server] workers`` (gateway/config.py): "auto" or 1..64, the errors naming key and file, and
the combinations of other keys they run with (both spool backends, the round-trip probe)."""
from __future__ import annotations

import os
import tomllib

import pytest

from gateway.config import Config, ConfigError, parse


def cfg(text: str) -> Config:
    return parse(tomllib.loads(text), "gw.toml")


def test_default_is_one_worker_per_cpu():
    assert Config().server.workers == "auto"
    assert Config().server.worker_count == (os.cpu_count() or 1)
    assert cfg("[server]\nhostname = \"gw.test\"\n").server.worker_count == (os.cpu_count() or 1)


@pytest.mark.parametrize("value, count", [("2", 2), ("64", 64), ('"auto"', os.cpu_count() or 1)])
def test_numbers_and_auto(value, count):
    assert cfg(f"[server]\nworkers = {value}\n").server.worker_count == count


@pytest.mark.parametrize("value", ["0", "65", '"many"', "true", "1.5", '"2"'])
def test_bad_values_name_the_key_and_file(value):
    with pytest.raises(ConfigError) as e:
        cfg(f"[server]\nworkers = {value}\n")
    assert str(e.value).startswith("gw.toml: server.workers: ")
    assert '"auto" or a number of processes from 1 to 64' in str(e.value)


def test_postgresql_spool_is_accepted_with_workers():
    c = cfg('[server]\nworkers = 2\n[spool]\nbackend = "postgresql"\n'
            'dsn = "postgresql://gw@db/mailgate"\n[webmail]\nenabled = false\n')
    assert c.server.worker_count == 2 and c.spool.backend == "postgresql"


def test_roundtrip_probe_with_workers_is_accepted():
    c = cfg('[server]\nworkers = 2\n[probes]\nroundtrip = true\nroundtrip_to = "canary@example.com"\n'
            'roundtrip_return = "probe-return@example.com"\n')
    assert c.server.worker_count == 2 and c.probes.roundtrip
