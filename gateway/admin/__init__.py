"""The admin HTTP API, /healthz and Prometheus /metrics, served by uvicorn inside the gateway's
own event loop (see server.py). api.py: the Starlette app; metrics.py: the collectors."""
from gateway.admin.api import AdminContext, build_app
from gateway.admin.server import AdminServer

__all__ = ["AdminContext", "AdminServer", "build_app"]
