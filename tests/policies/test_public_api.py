"""Pin the public API the intake imports: a rename here is a breaking change."""
import inspect

from policies import directory, mail_from, rcpt_address, rcpt_chain, relay_networks, verdict


def test_exports():
    assert set(verdict.__all__) >= {"Verdict", "RCPT_OK", "RCPT_USER_UNKNOWN", "RELAY_DENIED"}
    assert rcpt_address.__all__ == ["Mailbox", "AddressError", "parse_rcpt", "normalize_domain",
                                    "to_ascii_domain"]
    assert mail_from.__all__ == ["MailFromDecision", "check_mail_from", "has_control"]
    assert directory.__all__ == ["DirectoryError", "Entry", "Directory", "DirectoryWatcher"]
    assert relay_networks.__all__ == ["TrustedNetworks"]
    assert rcpt_chain.__all__ == ["RcptContext", "RcptDecision", "check_rcpt"]


def test_signatures():
    assert str(inspect.signature(rcpt_chain.check_rcpt)) == (
        "(addr: 'str', client_ip: 'str', ctx: 'RcptContext', *, smtputf8: 'bool' = True)"
        " -> 'RcptDecision'")
    assert str(inspect.signature(mail_from.check_mail_from)) == (
        "(path: 'str', smtputf8: 'bool') -> 'MailFromDecision'")
    assert str(inspect.signature(rcpt_address.parse_rcpt)) == "(addr: 'str') -> 'Mailbox'"
    assert list(inspect.signature(rcpt_chain.RcptContext).parameters)[:4] == [
        "accepted_domains", "directory", "filtering", "trusted"]
    assert list(inspect.signature(rcpt_chain.RcptDecision).parameters) == [
        "verdict", "mailbox", "local"]
    for name in ("load", "empty", "lookup", "expand", "domains", "__len__"):
        assert hasattr(directory.Directory, name)
    for name in ("maybe_reload", "reload"):
        assert hasattr(directory.DirectoryWatcher, name)
