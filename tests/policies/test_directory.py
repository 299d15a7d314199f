import os
from pathlib import Path

import pytest

from policies.directory import Directory, DirectoryError, DirectoryWatcher, Entry

DATA = Path(__file__).parent / "data"
CSV_EXPORT = DATA / "exchange-recipients.csv"
JSON_EXPORT = DATA / "directory.json"


@pytest.fixture(scope="module")
def csv_dir() -> Directory:
    return Directory.load(CSV_EXPORT)


@pytest.fixture(scope="module")
def json_dir() -> Directory:
    return Directory.load(JSON_EXPORT)


# --- the Exchange CSV export ------------------------------------------------------------

def test_csv_counts_recipients_not_aliases(csv_dir):
    assert len(csv_dir) == 10
    assert csv_dir.domains == frozenset({"example.com", "example.net", "bücher.example"})


@pytest.mark.parametrize("address,primary,kind", [
    ("alice.smith@example.com", "alice.smith@example.com", "mailbox"),
    ("ASMITH@example.com", "alice.smith@example.com", "mailbox"),       # smtp: proxy
    ("alice@example.net.", "alice.smith@example.com", "mailbox"),       # other domain, dot
    ("robert.jones@EXAMPLE.COM", "bob@example.com", "mailbox"),
    ("contact@example.com", "info@example.com", "mailbox"),             # SharedMailbox alias
    ("boardroom@example.com", "boardroom@example.com", "mailbox"),      # RoomMailbox
    ("carol@bücher.example", "carol@example.com", "mailbox"),           # IDN proxy address
    ("carol@xn--bcher-kva.example", "carol@example.com", "mailbox"),
    ("vertrieb@example.com", "sales@example.com", "group"),
    ("everyone@example.com", "allstaff@example.com", "group"),          # dynamic group
    ("partner.contact@example.com", "partner.contact@example.com", "contact"),
    ("dave.contractor@example.com", "dave.contractor@example.com", "contact"),  # MailUser
])
def test_csv_lookup(csv_dir, address, primary, kind):
    entry = csv_dir.lookup(address)
    assert entry is not None
    assert (entry.address, entry.kind) == (primary, kind)


def test_csv_ignores_non_smtp_proxies_and_unknowns(csv_dir):
    assert csv_dir.lookup("alice.smith@example.com ") is not None
    assert csv_dir.lookup("sip:alice.smith@example.com") is None
    assert csv_dir.lookup("nobody@example.com") is None
    assert csv_dir.lookup("not an address") is None
    assert csv_dir.lookup("jane.doe@partner.example.org") is None   # a contact's target


def test_csv_contact_target(csv_dir):
    assert csv_dir.lookup("partner.contact@example.com") == Entry(
        "partner.contact@example.com", "contact", (), "Jane.Doe@partner.example.org")


def test_csv_expand(csv_dir):
    assert csv_dir.expand("Alice.Smith@example.com") == ["alice.smith@example.com"]
    assert csv_dir.expand("asmith@example.com") == ["alice.smith@example.com"]
    # sales -> emea-sales -> sales is a cycle; the contact reaches no mailbox here
    assert csv_dir.expand("sales@example.com") == [
        "alice.smith@example.com", "bob@example.com", "carol@example.com"]
    assert csv_dir.expand("emea-sales@example.com") == [
        "carol@example.com", "alice.smith@example.com", "bob@example.com"]
    # dynamic group: alias member, nested group with a cycle, duplicates removed, order kept
    assert csv_dir.expand("everyone@example.com") == [
        "bob@example.com", "alice.smith@example.com", "carol@example.com", "info@example.com"]
    assert csv_dir.expand("partner.contact@example.com") == []
    assert csv_dir.expand("nobody@example.com") == []


def test_csv_utf16_export(tmp_path):
    path = tmp_path / "recipients.csv"
    path.write_bytes(CSV_EXPORT.read_bytes().decode("utf-8-sig").encode("utf-16"))
    assert len(Directory.load(path)) == 10


# --- the JSON format --------------------------------------------------------------------

def test_json_lookup_and_expand(json_dir):
    assert len(json_dir) == 7
    assert json_dir.lookup("FRANK@example.org").address == "frank.miller@example.org"
    assert json_dir.lookup("crew@example.org").kind == "group"
    assert json_dir.lookup("support@example.org").address == "helpdesk@example.org"
    assert json_dir.lookup("vendor@example.org").target == "orders@vendor.example"
    assert json_dir.lookup("team@example.org").members == (
        "erin@example.org", "fmiller@example.org", "leads@example.org")
    assert json_dir.expand("all@example.org") == [
        "erin@example.org", "frank.miller@example.org", "helpdesk@example.org"]
    assert json_dir.expand("leads@example.org") == [
        "frank.miller@example.org", "erin@example.org"]


def test_empty_directory():
    d = Directory.empty()
    assert len(d) == 0 and d.lookup("a@example.com") is None and d.expand("a@b.c") == []
    assert d.domains == frozenset()


# --- the watcher ------------------------------------------------------------------------

def _write(path: Path, text: str, mtime: float) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_watcher_disabled_without_file():
    w = DirectoryWatcher(None)
    assert (w.enabled, len(w.current), w.maybe_reload(), w.last_error) == (False, 0, False, None)


def test_watcher_reloads_on_change_and_keeps_old_on_error(tmp_path, caplog):
    path = tmp_path / "directory.json"
    _write(path, '{"mailboxes": ["a@example.com"]}', 1_000_000)
    w = DirectoryWatcher(path)
    assert w.enabled and w.current.lookup("a@example.com") is not None
    assert w.maybe_reload() is False                       # unchanged

    _write(path, '{"mailboxes": ["a@example.com", "b@example.com"]}', 1_000_010)
    assert w.maybe_reload() is True
    assert len(w.current) == 2 and w.last_error is None
    good = w.current

    _write(path, '{"mailboxes": ["a@example.com", "b@exa', 1_000_020)  # truncated export
    assert w.maybe_reload() is False
    assert w.current is good
    assert "directory.json: line 1" in w.last_error
    assert "directory_reload_failed" in caplog.text
    assert w.maybe_reload() is False                       # same bad file: not retried

    _write(path, '{"mailboxes": []}', 1_000_030)           # empty export closes nothing
    assert w.maybe_reload() is False and w.current is good
    assert "no recipients" in w.last_error

    path.unlink()                                          # export deleted
    assert w.maybe_reload() is False and w.current is good
    assert "cannot stat" in w.last_error

    _write(path, '{"mailboxes": ["c@example.com"]}', 1_000_040)
    assert w.maybe_reload() is True
    assert w.current.lookup("c@example.com") and w.last_error is None


def test_watcher_waits_for_file_to_settle(tmp_path):
    now = [1_000_000.0]
    path = tmp_path / "recipients.csv"
    _write(path, "PrimarySmtpAddress,RecipientTypeDetails\na@example.com,UserMailbox\n", now[0] - 60)
    w = DirectoryWatcher(path, settle=1.0, clock=lambda: now[0])
    _write(path, "PrimarySmtpAddress,RecipientTypeDetails\nb@example.com,UserMailbox\n", now[0])
    assert w.maybe_reload() is False                       # still being written?
    now[0] += 2
    assert w.maybe_reload() is True and w.current.lookup("b@example.com")


def test_watcher_start_up_fails_on_bad_file(tmp_path):
    with pytest.raises(DirectoryError, match="missing.csv"):
        DirectoryWatcher(tmp_path / "missing.csv")


def test_watcher_reload_raises(tmp_path):
    path = tmp_path / "d.json"
    _write(path, '{"mailboxes": ["a@example.com"]}', 1_000_000)
    w = DirectoryWatcher(path)
    _write(path, '{"mailboxes": "a@example.com"}', 1_000_010)
    with pytest.raises(DirectoryError, match="mailboxes must be a list"):
        w.reload()
    assert w.current.lookup("a@example.com") is not None
