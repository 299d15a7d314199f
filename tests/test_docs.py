"""The annotated example configuration keeps its promise (its first lines): every setting of
``gateway/config.py`` is listed; a key set in the file shows its default, unless its comment says
``(default: X)`` with the real default, because the example sets what a production MX needs; a
key that is unset by default (a path, a list of tables) is shown commented out. The file must
also load as it is. Fails when a default in config.py and the example drift apart, or a new key
is added to one and not the other."""
from __future__ import annotations

import json
import re
import socket
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway import config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "mailgate.example.toml"
FQDN = "the machine's FQDN"     # how the example names server.hostname's computed default


def lines_by_key(text: str) -> dict[tuple[str, str], tuple[bool, str]]:
    """(table, key) -> (commented out, comment text) for every ``key = value`` line, including
    ``# key = value`` lines (a key shown but not set)."""
    out, table = {}, ""
    for line in text.splitlines():
        head = re.match(r"^#?\s*\[\[?([\w.]+)\]\]?", line)
        if head:
            table = head.group(1)
            parent, _, name = table.rpartition(".")
            if parent:      # [probes.http], # [[routing.routes]]: the table shows that setting
                out.setdefault((parent, name), (line.startswith("#"), comment_of(line)))
            continue
        m = re.match(r"^(#\s*)?(\w+)\s*=\s*(.*)$", line)
        if m:
            out.setdefault((table, m.group(2)), (bool(m.group(1)), comment_of(m.group(3))))
    return out


def comment_of(rest: str) -> str:
    """The comment after a TOML value (a ``#`` outside a string)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return rest[i + 1:]
    return ""


def render(value) -> str:
    """A default as the example's comments write it: TOML-like JSON, ``unset`` for None."""
    return "unset" if value is None else json.dumps(value)


def settings() -> list[tuple[str, str, object]]:
    """(table, key, default in JSON form) of every setting, from the typed configuration."""
    defaults = config.Config().model_dump(mode="json")
    out = []
    for table, field in config.Config.model_fields.items():
        if isinstance(field.default, BaseModel):
            for key in type(field.default).model_fields:
                out.append((table, key, defaults[table][key]))
    return out


def test_example_loads_as_it_is():
    cfg = config.load(EXAMPLE)
    assert cfg.source == str(EXAMPLE)


def test_every_setting_is_in_the_example_and_every_example_key_is_a_setting():
    shown = lines_by_key(EXAMPLE.read_text())
    known = {(t, k) for t, k, _ in settings()}
    missing = sorted(known - set(shown))
    assert not missing, f"settings in gateway/config.py not in {EXAMPLE.name}: {missing}"
    # keys under tables of free-form entries ([probes.http] names, [[routing.routes]]) aside
    tables = {t for t, _ in known}
    unknown = sorted((t, k) for t, k in shown if t in tables and (t, k) not in known)
    assert not unknown, f"keys in {EXAMPLE.name} that gateway/config.py does not have: {unknown}"


@pytest.mark.parametrize("table,key,default", settings(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_shows_each_default(table, key, default):
    raw = tomllib.loads(EXAMPLE.read_text())
    commented, comment = lines_by_key(EXAMPLE.read_text()).get((table, key), (True, ""))
    where = f"{EXAMPLE.name} [{table}] {key}"
    if (table, key) == ("server", "hostname"):
        default = socket.getfqdn()
        stated = FQDN
    else:
        stated = render(default)
    if key not in raw.get(table, {}):
        # shown commented out: only a setting whose default is "nothing" may be left unset
        assert commented, where
        assert default in (None, [], {}, ""), f"{where}: commented out, but the default is {default!r}"
        return
    value = raw[table][key]
    if value == default:
        return
    assert f"(default: {stated})" in comment, \
        f"{where} = {value!r} differs from the default {default!r}: its comment must say (default: {stated})"
