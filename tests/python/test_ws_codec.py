"""Differential tests of the ws codec against Python `websockets`, in both roles."""

import asyncio
import subprocess

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError

from conftest import binary


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def test_server_role_echoes_messages(ws_peer_server):
    """Our server role echoes text, unicode, binary and large messages sent by websockets."""

    async def scenario():
        async with connect(f"ws://127.0.0.1:{ws_peer_server.port}/", max_size=None) as ws:
            for message in ["hello", "héllo wörld € 𝄞", b"\x00\x01\xff", bytes(range(256)) * 300, ""]:
                await ws.send(message)
                assert await ws.recv() == message

    run(scenario())


def test_server_role_reassembles_fragments(ws_peer_server):
    """A message websockets sends in fragments (code points split across them) comes back whole."""

    async def scenario():
        async with connect(f"ws://127.0.0.1:{ws_peer_server.port}/") as ws:
            euro = "€".encode()
            await ws.send([b"ab", euro[:1], euro[1:2], euro[2:] + b"cd"])
            assert await ws.recv() == b"ab" + euro + b"cd"
            await ws.send(["fr", "ag", "ments €"])
            assert await ws.recv() == "fragments €"

    run(scenario())


def test_server_role_ping_and_close_code(ws_peer_server):
    """Pings get pongs, and a close code is echoed in the closing handshake."""

    async def scenario():
        ws = await connect(f"ws://127.0.0.1:{ws_peer_server.port}/")
        pong = await ws.ping(b"payload")
        latency = await asyncio.wait_for(pong, 5)
        assert latency >= 0
        await ws.close(4001, "bye")
        assert ws.close_code == 4001

    run(scenario())


def test_server_role_refuses_oversized_message(ws_peer_server):
    """A message over the server's limit is answered with close code 1009."""

    async def scenario():
        async with connect(f"ws://127.0.0.1:{ws_peer_server.port}/", max_size=None) as ws:
            await ws.send(b"x" * 100_001)
            with pytest.raises(ConnectionClosedError) as err:
                await ws.recv()
            assert err.value.rcvd.code == 1009
        # The server still serves new connections.
        async with connect(f"ws://127.0.0.1:{ws_peer_server.port}/") as ws:
            await ws.send("still up")
            assert await ws.recv() == "still up"

    run(scenario())


def test_client_role_against_websockets_server():
    """Our client role runs its script against a websockets echo server, which accepts every frame."""

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def scenario():
        async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            proc = await asyncio.create_subprocess_exec(
                str(binary("ws-peer")),
                "client",
                f"127.0.0.1:{port}",
                "/",
                stdout=subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            return out.decode().splitlines()

    lines = run(scenario())
    assert lines == [
        "text hello",
        "text héllo wörld €",
        "binary 4 000102ff",
        "binary 70000 0001020304050607",
        "text a€z",
        "pong are you there",
        "close 4000",
    ]
