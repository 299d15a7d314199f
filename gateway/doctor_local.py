"""Local checks of `mailgate doctor` (gateway/doctor.py): the recipient directory loads, alert
channels are configured, and the data directory's file system has room for the spool at the last
24 h's volume (spool.query.volume_since). Reads the directory file and the spool; writes nothing.
On a PostgreSQL spool (spool.backend) the disk check covers server.data_dir only: the queue's
volume is the database server's to watch, and no SQLite file is opened (gateway.cli_backend).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from gateway.cli_backend import is_postgresql
from gateway.config import Config
from gateway.doctor import Check

__all__ = ["check_alerts", "check_directory", "check_disk"]

DISK_WARN_FRACTION, DISK_FAIL_FRACTION = 0.10, 0.02      # of the file system free
DISK_WARN_DAYS, DISK_FAIL_DAYS = 14.0, 2.0               # left at the last 24 h's volume


def check_directory(cfg: Config) -> list[Check]:
    from policies.directory import Directory, DirectoryError
    f = cfg.directory.file
    if f is None:
        return [Check("WARN", "directory", "directory.file unset: every local part of an accepted "
                      "domain is accepted (backscatter, dictionary attacks)",
                      "export the valid recipients (docs/directory.md) and set directory.file")]
    try:
        d = Directory.load(f)
    except (DirectoryError, OSError) as e:
        return [Check("FAIL", "directory", f"{f}: {e}", "fix the export; the gateway keeps the "
                      "last good copy while running, but will not start with this one")]
    have = d.domains
    empty = [x for x in cfg.relay.accepted_domains if x not in have]
    detail = f"{len(d)} entries from {f}" + (f"; none for {', '.join(empty)}" if empty else "")
    if empty:
        return [Check("WARN", "directory", detail, "mail to those domains is refused with 550 5.1.1: "
                      "add their recipients to the export")]
    return [Check("OK", "directory", detail)]


def check_alerts(cfg: Config) -> list[Check]:
    c = cfg.continuity
    schemes = sorted({u.partition("://")[0] for u in c.alert_urls})
    detail = f"{len(c.alert_urls)} apprise URL(s) ({', '.join(schemes) or '-'}), " \
             f"{len(c.alert_mail_to)} alert mail address(es)"
    if not c.alert_urls and not c.alert_mail_to:
        level = "OK" if c.mode == "off" else "WARN"
        return [Check(level, "alerts", "no alert channel: nobody hears of a continuity event",
                      "set continuity.alert_urls and/or continuity.alert_mail_to; then "
                      "`mailgate alerts test`")]
    inside = [a for a in c.alert_mail_to if a.rpartition("@")[2].lower() in cfg.relay.accepted_domains]
    if inside:
        return [Check("WARN", "alerts", detail + f"; {', '.join(inside)} is behind the Exchange it "
                      "warns about", "use addresses outside the accepted domains")]
    return [Check("OK", "alerts", detail + " (`mailgate alerts test` sends one)")]


def check_disk(cfg: Config) -> list[Check]:
    path = Path(cfg.server.data_dir)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    frac = free / total if total else 0.0
    detail = f"{_size(free)} free of {_size(total)} ({frac:.0%}) at {probe}"
    daily = 0
    if is_postgresql(cfg):       # the queue's bytes are on the database server: no spool.db here
        detail += ('; spool volume not checked: spool.backend = "postgresql" (watch the '
                   "database server's disk)")
    elif cfg.spool_path.exists():
        from spool import db, query
        conn = db.connect(cfg.spool_path)
        try:
            v = query.volume_since(conn, time.time() - 86400)
        finally:
            conn.close()
        # SQLite keeps the bytes plus WAL and index overhead: count the day's bytes twice
        daily = 2 * (v["bytes"] + v["mailbox_bytes"])
        detail += (f"; last 24 h: {v['messages']} messages, {_size(v['bytes'])} spool + "
                   f"{_size(v['mailbox_bytes'])} mailboxes")
    days = free / daily if daily else None
    if days is not None:
        detail += f"; about {days:.0f} days left at this volume"
    fix = (f"free space on {probe} or move server.data_dir; lower delivery.finished_retention / "
           "continuity.mailbox_retention")
    if frac < DISK_FAIL_FRACTION or (days is not None and days < DISK_FAIL_DAYS) \
            or free < 2 * cfg.smtp.max_message_size:
        return [Check("FAIL", "disk", detail, fix)]
    if frac < DISK_WARN_FRACTION or (days is not None and days < DISK_WARN_DAYS):
        return [Check("WARN", "disk", detail, fix)]
    return [Check("OK", "disk", detail)]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
