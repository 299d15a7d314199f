from pathlib import Path

import pytest

from policies.directory import Directory, DirectoryError

HEADER = '"PrimarySmtpAddress","RecipientTypeDetails","EmailAddresses","Members"\n'


def load(tmp_path: Path, name: str, text: str) -> Directory:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return Directory.load(path)


@pytest.mark.parametrize("name,text,message", [
    ("d.csv", HEADER + '"a@example.com","UserMailbox","Microsoft.Exchange.Data.ProxyAddressCollection",""\n',
     r"line 2 \(a@example.com\): emailaddresses holds .*-join"),
    ("d.csv", HEADER + '"a@example.com","UserMailbox","",""\n"g@example.com","DynamicDistributionGroup","","System.Object[]"\n',
     "line 3 .*members holds"),
    ("d.csv", HEADER + '"a@example.com","UserMailbox",""\n', "line 2: 3 fields, header has 4"),
    ("d.csv", '"Address","Type"\n"a@example.com","UserMailbox"\n', "line 1: header lacks column"),
    ("d.csv", HEADER + '"a@example.com","UserMailbox","",""\n"b@example.com","UserMailbox","smtp:A@Example.com",""\n',
     r"line 3 .*a@example.com is already defined at line 2"),
    ("d.csv", HEADER + '"not-an-address","UserMailbox","",""\n', "line 2 .*no domain"),
    ("d.csv", HEADER + '"a@example.com","UserMailbox","","b@example.com"\n', "Members given for a mailbox"),
    ("d.csv", HEADER, "no recipients"),
    ("d.csv", "", "no header"),
    ("d.json", '{"mailboxes": ["a@example.com"], "group": []}', "unknown top-level key.*group"),
    ("d.json", '{"groups": [{"address": "g@example.com", "member": []}]}', r"groups\[0\]: unknown key"),
    ("d.json", '{"mailboxes": ["a@example.com", {"aliases": []}]}', r"mailboxes\[1\]: missing"),
    ("d.json", '{"groups": [{"address": "g@example.com", "members": ["x@@y"]}]}',
     r"groups\[0\] \(g@example.com\): bad address 'x@@y'"),
    ("d.json", '[1, 2]', "top level must be an object"),
    ("d.json", '{"mailboxes": ["a@example.com",]}', "line 1 column"),
    ("d.yaml", "mailboxes: []", "expected a .json or .csv"),
])
def test_bad_files_name_file_and_place(tmp_path, name, text, message):
    with pytest.raises(DirectoryError, match=message) as info:
        load(tmp_path, name, text)
    assert str(tmp_path / name) in str(info.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(HEADER.encode() + b'"j\xf6rg@example.com","UserMailbox","",""\n')
    with pytest.raises(DirectoryError, match="not UTF-8"):
        Directory.load(path)


def test_hand_written_csv_without_prefixes(tmp_path):
    d = load(tmp_path, "d.csv",
             "PrimarySmtpAddress,RecipientTypeDetails,EmailAddresses,Members\n"
             "a@example.com,UserMailbox,a.alias@example.com; SMTP:a@example.com,\n"
             "g@example.com,MailUniversalDistributionGroup,,SMTP:a@example.com;b@partner.example\n"
             "r@example.com,SomeFutureMailboxType,,\n")
    assert d.lookup("a.alias@example.com").address == "a@example.com"
    assert d.lookup("g@example.com").members == ("a@example.com", "b@partner.example")
    assert d.expand("g@example.com") == ["a@example.com"]
    assert d.lookup("r@example.com").kind == "mailbox"


CSV_RSAE = ('"PrimarySmtpAddress","RecipientTypeDetails","EmailAddresses","Members",'
            '"RequireSenderAuthenticationEnabled"\n')


def test_csv_require_sender_authentication_enabled(tmp_path):
    """issue 6 item 16: the Exchange flag is read per recipient (True/False; empty is False)."""
    d = load(tmp_path, "d.csv", CSV_RSAE
             + '"a@example.com","UserMailbox","","",""\n'
             + '"g@example.com","MailUniversalDistributionGroup","","a@example.com","True"\n'
             + '"dyn@example.com","DynamicDistributionGroup","smtp:dyn2@example.com","","TRUE"\n'
             + '"open@example.com","MailUniversalDistributionGroup","","a@example.com","False"\n')
    assert [d.lookup(a).internal_only for a in ("a@example.com", "g@example.com",
            "dyn@example.com", "dyn2@example.com", "open@example.com")] == [
        False, True, True, True, False]


def test_json_require_sender_authentication_enabled(tmp_path):
    d = load(tmp_path, "d.json", '{"mailboxes": ["a@example.com"], "groups": ['
             '{"address": "g@example.com", "members": ["a@example.com"],'
             ' "require_sender_authentication_enabled": true},'
             '{"address": "h@example.com", "dynamic": true}]}')
    assert (d.lookup("g@example.com").internal_only, d.lookup("h@example.com").internal_only,
            d.lookup("a@example.com").internal_only) == (True, False, False)


@pytest.mark.parametrize("name,text,message", [
    ("d.csv", CSV_RSAE + '"g@example.com","MailUniversalDistributionGroup","","","yes"\n',
     r"line 2 \(g@example.com\): RequireSenderAuthenticationEnabled is 'yes'"),
    ("d.json", '{"groups": [{"address": "g@example.com", '
               '"require_sender_authentication_enabled": "true"}]}',
     r"groups\[0\] \(g@example.com\): \"require_sender_authentication_enabled\" must be true"),
    ("d.json", '{"contacts": [{"address": "c@example.com", "target": "x@y.test", '
               '"require_sender_authentication_enabled": true}]}', r"contacts\[0\].*unknown key"),
])
def test_bad_require_sender_authentication_value_names_file_and_place(tmp_path, name, text, message):
    with pytest.raises(DirectoryError, match=message):
        load(tmp_path, name, text)


def test_alternate_contacts_for_webmail_login_codes(tmp_path):
    """issue 7: OtherMails (first entry) and MobilePhone/Mobile in the CSV; alt_email and phone on
    JSON mailboxes; a phone loses its separators."""
    d = load(tmp_path, "d.csv",
             '"PrimarySmtpAddress","RecipientTypeDetails","EmailAddresses","OtherMails","MobilePhone"\n'
             '"a@example.com","UserMailbox","","SMTP:a.home@home.test;a2@home.test","+44 (1632) 960-961"\n'
             '"b@example.com","UserMailbox","","",""\n')
    a, b = d.lookup("a@example.com"), d.lookup("b@example.com")
    assert (a.alt_email, a.phone, b.alt_email, b.phone) == ("a.home@home.test", "+441632960961", "", "")
    assert [e.address for e in d.mailboxes()] == ["a@example.com", "b@example.com"]
    d = load(tmp_path, "d2.csv", '"PrimarySmtpAddress","RecipientTypeDetails","Mobile"\n'
                                 '"a@example.com","UserMailbox","+1 555 123 4567"\n')
    assert d.lookup("a@example.com").phone == "+15551234567"
    d = load(tmp_path, "d.json", '{"mailboxes": [{"address": "a@example.com", "alt_email": "x@home.test",'
                                 ' "phone": "+15551234567"}]}')
    assert (d.lookup("a@example.com").alt_email, d.lookup("a@example.com").phone) == ("x@home.test", "+15551234567")


@pytest.mark.parametrize("name,text,message", [
    ("d.csv", '"PrimarySmtpAddress","RecipientTypeDetails","MobilePhone"\n"a@example.com","UserMailbox","call me"\n',
     r"line 2 \(a@example.com\): phone 'call me' is not a number"),
    ("d.csv", '"PrimarySmtpAddress","RecipientTypeDetails","OtherMails"\n"a@example.com","UserMailbox","System.Object[]"\n',
     r"othermails holds .*-join"),
    ("d.json", '{"mailboxes": [{"address": "a@example.com", "alt_email": ["x@home.test"]}]}',
     r"\"alt_email\" must be a string"),
    ("d.json", '{"mailboxes": [{"address": "a@example.com", "alt_email": "not an address"}]}',
     r"bad address 'not an address'"),
    ("d.json", '{"groups": [{"address": "g@example.com", "phone": "+15551234567"}]}', r"groups\[0\].*unknown key"),
])
def test_bad_alternate_contacts_name_file_and_place(tmp_path, name, text, message):
    with pytest.raises(DirectoryError, match=message):
        load(tmp_path, name, text)
