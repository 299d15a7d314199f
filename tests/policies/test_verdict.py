import pytest

from policies import verdict
from policies.verdict import Verdict

USER_UNKNOWN_LINE = "550 5.1.1 Recipient address rejected: User unknown"


def test_reply_line_and_flags():
    v = Verdict(550, "5.1.1", "Recipient address rejected: User unknown")
    assert v.reply() == USER_UNKNOWN_LINE
    assert (v.ok, v.temporary) == (False, False)
    assert Verdict(250, "2.1.5", "Recipient OK").ok is True
    assert Verdict(451, "4.3.0", "later").temporary is True


def test_reply_never_spans_lines():
    v = Verdict(550, "5.7.1", "no\r\n250 2.0.0 smuggled")
    assert v.reply() == "550 5.7.1 no 250 2.0.0 smuggled"
    assert "\r" not in v.reply() and "\n" not in v.reply()


@pytest.mark.parametrize("code,status", [(550, "4.1.1"), (250, "5.1.1"), (354, "3.0.0"),
                                         (600, "5.0.0"), (550, "5.1"), (550, "x.1.1")])
def test_inconsistent_verdicts_refused(code, status):
    with pytest.raises(ValueError):
        Verdict(code, status, "text")


def test_named_constants():
    assert verdict.RCPT_OK.reply() == "250 2.1.5 Recipient OK"
    assert verdict.RCPT_USER_UNKNOWN.reply() == USER_UNKNOWN_LINE
    assert verdict.RELAY_DENIED.reply() == "550 5.7.1 Relay access denied"
    assert (verdict.RCPT_BAD_SYNTAX.code, verdict.RCPT_BAD_SYNTAX.status) == (501, "5.1.3")
    assert (verdict.TEMP_FAILURE.code, verdict.TEMP_FAILURE.status) == (451, "4.3.0")


def test_frozen():
    with pytest.raises(AttributeError):
        verdict.RCPT_OK.code = 550  # type: ignore[misc]
