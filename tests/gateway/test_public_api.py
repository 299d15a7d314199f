"""Pin the public API of the spool and of gateway.intake: a rename here is a breaking change for
the gateway, the CLI, the admin API and webmail, which all go through it."""
import dataclasses
import inspect

import gateway.intake
import spool
from gateway.intake.server import IntakeServer
from spool import NewMessage, Spool


def test_spool_exports():
    assert spool.__all__ == [
        "Spool", "SpoolError", "NewMessage", "StoredMessage", "Recipient",
        "QueueState", "RcptState", "TRANSITIONS", "InvalidTransition",
    ]
    for name in spool.__all__:
        assert getattr(spool, name) is not None


def test_spool_states():
    assert [s.value for s in spool.QueueState] == [
        "incoming", "active", "deferred", "hold", "delivered", "bounced", "corrupt"]
    assert [s.value for s in spool.RcptState] == ["pending", "delivered", "bounced"]


ACCOUNT_VERBS = [
    "accept_admin_totp", "accept_totp_login", "admin_enrol_link", "append_audit",
    "change_password", "count_token_try", "create_session", "enrol_admin", "enrol_user",
    "ensure_admin", "ensure_user", "get_admin", "get_session", "get_user", "issue_code",
    "issue_token", "issue_user_link", "list_admins", "list_audit", "list_users", "peek_token",
    "reset_user_totp", "revoke_all_sessions", "revoke_session", "revoke_tokens", "set_admin_disabled",
    "set_admin_password", "set_contacts", "set_user_disabled", "set_user_password", "shared_secret", "touch_session",
    "update_admin", "update_user", "use_code", "use_token"]


def test_spool_account_verbs():
    from spool.accounts_verbs import AccountVerbs
    assert sorted(n for n in vars(AccountVerbs) if not n.startswith("_")) == ACCOUNT_VERBS
    for name in ACCOUNT_VERBS:
        assert inspect.iscoroutinefunction(getattr(Spool, name)), name


MAILBOX_VERBS = [
    "commit_sent", "copy_sent_after_events", "count_journal_pending", "file_message",
    "filed_message_data", "folder_page", "get_mailbox_message", "index_journal", "journal_pending",
    "list_mailbox", "mailbox_counts", "purge_mailboxes", "search_messages", "sent_status",
    "set_flags", "unread_counts"]


def test_spool_mailbox_verbs():
    from spool.mailbox_verbs import MailboxVerbs
    from spool.pg.mailbox import PgMailboxVerbs
    assert sorted(n for n in vars(MailboxVerbs) if not n.startswith("_")) == MAILBOX_VERBS
    assert sorted(n for n in vars(PgMailboxVerbs) if not n.startswith("_")) == MAILBOX_VERBS
    for name in MAILBOX_VERBS:
        assert inspect.iscoroutinefunction(getattr(Spool, name)), name
        assert list(inspect.signature(getattr(MailboxVerbs, name)).parameters) == \
            list(inspect.signature(getattr(PgMailboxVerbs, name)).parameters), name


CONSOLE_VERBS = [
    "cancel_drill", "count_drill_held", "delete_message", "drill_audit", "drill_audit_rows",
    "drill_message", "end_drill", "flush_queue", "get_command", "get_drill", "hold_message",
    "probe_history", "recent_drills", "refuse_drill_command", "release_drill_holds",
    "release_message", "replay_progress", "request_drill", "running_drill", "search_queue",
    "start_drill", "timeline"]


def test_spool_console_verbs():
    from spool.console_verbs import ConsoleVerbs
    from spool.pg.console import PgConsoleVerbs
    assert sorted(n for n in vars(ConsoleVerbs) if not n.startswith("_")) == CONSOLE_VERBS
    assert sorted(n for n in vars(PgConsoleVerbs) if not n.startswith("_")) == CONSOLE_VERBS
    for name in CONSOLE_VERBS:
        assert inspect.iscoroutinefunction(getattr(Spool, name)), name
        assert list(inspect.signature(getattr(ConsoleVerbs, name)).parameters) == \
            list(inspect.signature(getattr(PgConsoleVerbs, name)).parameters), name


def test_spool_methods():
    public = sorted(n for n in dir(Spool) if not n.startswith("_") and n not in ACCOUNT_VERBS
                    and n not in MAILBOX_VERBS and n not in CONSOLE_VERBS)
    assert public == ["audit_command", "claim_due", "close", "cluster_probes", "commit",
                      "continuity_audit", "continuity_state", "count_held", "counts", "get",
                      "hold_due_now", "lock_stats", "message_size", "move", "new_queue_id", "next_due_at",
                      "open", "pending_commands", "ping", "purge_finished", "queue_command",
                      "read", "record_attempt", "record_delivered", "record_probe",
                      "release_held", "renew", "replay_in_flight", "requeue_expired",
                      "save_transition", "write"]
    sig = {n: list(inspect.signature(getattr(Spool, n)).parameters) for n in public}
    assert sig["open"] == ["path", "recover"]
    assert sig["commit"] == ["self", "msg"]
    assert sig["record_attempt"][:5] == ["self", "queue_id", "outcomes", "next_attempt_at", "dsn"]
    assert sig["get"] == ["self", "queue_id", "with_data"]
    assert sig["claim_due"][:2] == ["self", "limit"]
    for name in ("open", "close", "commit", "claim_due", "record_attempt", "move", "get", "counts",
                 "renew", "requeue_expired", "message_size", "record_delivered", "purge_finished"):
        assert inspect.iscoroutinefunction(getattr(Spool, name)), name


def test_new_message_fields():
    names = [f.name for f in dataclasses.fields(NewMessage)]
    assert names[:3] == ["mail_from", "rcpt_tos", "data"]
    assert set(names) >= {"client_addr", "client_helo", "smtputf8", "body_8bit", "is_dsn", "state",
                          "queue_id"}


def test_intake_exports():
    assert gateway.intake.__all__ == ["IntakeServer"]
    assert gateway.intake.IntakeServer is IntakeServer
    assert list(inspect.signature(IntakeServer).parameters) == ["cfg", "handler"]
    assert inspect.iscoroutinefunction(IntakeServer.start)
    assert inspect.iscoroutinefunction(IntakeServer.stop)
