"""AdminServer: uvicorn in the caller's loop on a real socket; leaves the process's signal
handlers alone (the gateway's supervisor owns SIGTERM/SIGINT); a busy address fails at bind()."""
from __future__ import annotations

import asyncio
import signal
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.admin import AdminServer


def app() -> Starlette:
    async def hello(request):
        return PlainTextResponse("hello")
    return Starlette(routes=[Route("/", hello)])


async def test_serves_in_our_loop_without_touching_signal_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    server = AdminServer(app(), "127.0.0.1:0")
    host, port = server.bind()
    task = asyncio.create_task(server.serve())
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
        for _ in range(50):
            if server.server.started:
                break
            await asyncio.sleep(0.05)
        r = await http.get("/")
        assert (r.status_code, r.text) == (200, "hello")
        assert {s: signal.getsignal(s) for s in before} == before   # while serving
    server.stop()
    await asyncio.wait_for(task, 5)
    assert {s: signal.getsignal(s) for s in before} == before
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://{host}:{port}/")


def test_busy_address_fails_at_bind():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            AdminServer(app(), f"127.0.0.1:{port}").bind()


async def test_accepted_connections_have_tcp_nodelay():
    """A keep-alive response is written as headers then body: without TCP_NODELAY on the
    accepted socket the body waited ~40 ms for the client's delayed ACK (Nagle). asyncio sets
    it only on sockets created with proto IPPROTO_TCP."""
    server = AdminServer(app(), "127.0.0.1:0")
    host, port = server.bind()
    task = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
            for _ in range(50):
                if server.server.started:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get("/")).status_code == 200
            conns = list(server.server.server_state.connections)
            assert conns
            for proto in conns:
                sock = proto.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)
