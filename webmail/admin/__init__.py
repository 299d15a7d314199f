"""The admin console: pages under ``/admin`` of the webmail app, for admins only.

Admins are separate accounts (spool.admins: argon2id password and TOTP, both required) or the
gateway's admin token exchanged for a session. Every action is written to the audit log with
actor ``admin:NAME``. The web security rules of the webmail hold here too (CSP without inline
scripts, CSRF synchronizer token plus Fetch-Metadata/Origin, no internals in error pages).

Modules: ``session`` (admin sessions, ``require_admin``, ``check_admin_csrf``), ``routes``
(every admin route), ``views_*`` (one part of the console each).
"""
