"""Every route of the admin console, mounted at ``/admin`` by webmail.app."""
from __future__ import annotations

from webmail.admin import views_auth, views_queue, views_status, views_timeline, views_users


def routes() -> list:
    return [*views_auth.routes(), *views_status.routes(), *views_timeline.routes(),
            *views_queue.routes(), *views_users.routes()]
