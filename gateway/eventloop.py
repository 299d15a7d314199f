"""The event loop for ``mailgate serve``: uvloop when installed, else asyncio's own.

uvloop (libuv; the optional extra ``fast``: ``pip install mailgate[fast]``) runs the same
asyncio code with cheaper socket I/O, timers and callbacks. ``server.event_loop`` chooses:
"auto" (default) uses uvloop if it can be imported and falls back to asyncio's loop otherwise,
logging which one runs (``event_loop`` line at start); "uvloop" requires it (a clear startup
error without it); "asyncio" never uses it.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine


class EventLoopError(Exception):
    """``server.event_loop = "uvloop"`` but uvloop cannot be imported."""


def loop_factory(choice: str) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str, str]:
    """(factory for asyncio.Runner or None for asyncio's default, the loop's name, why).

    ``choice`` is server.event_loop: "auto", "uvloop" or "asyncio". Raises EventLoopError for
    "uvloop" when it is not installed (or fails to import)."""
    if choice == "asyncio":
        return None, "asyncio", "server.event_loop = asyncio"
    try:
        import uvloop
    except ImportError as e:
        if choice == "uvloop":
            raise EventLoopError(f"server.event_loop = \"uvloop\" but uvloop is not installed "
                                 f"({e}); pip install 'mailgate[fast]' or set \"auto\"") from None
        return None, "asyncio", f"uvloop not installed ({e})"
    return uvloop.new_event_loop, f"uvloop {uvloop.__version__}", f"server.event_loop = {choice}"


def run(main: Coroutine[Any, Any, Any], choice: str, log=None) -> Any:
    """Run ``main`` to completion on the loop ``choice`` selects (see loop_factory), logging
    ``event_loop loop=NAME reason=...`` at info level through ``log`` if given."""
    factory, name, reason = loop_factory(choice)
    if log is not None:
        log.info("event_loop", loop=name, reason=reason)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
