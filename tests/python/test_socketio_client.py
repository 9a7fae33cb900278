"""Interop of the Socket.IO layer with PyPI python-socketio 5.x, JSON and msgpack."""

import threading

import pytest
import socketio

from conftest import Server, binary


@pytest.fixture(params=["default", "msgpack"])
def conformance(request):
    server = Server(binary("conformance"), "--port", "0", "--parser", request.param)
    yield server, request.param
    assert server.alive(), "the server died during the test"
    server.stop()


def make_client(parser):
    return socketio.Client(serializer="msgpack" if parser == "msgpack" else "default", reconnection=False)


@pytest.mark.parametrize("transports", [["websocket"], ["polling"], ["polling", "websocket"]])
def test_connect_events_acks(conformance, transports):
    """Connect with auth, get it echoed, exchange an event and an ack, leave cleanly."""
    server, parser = conformance
    client = make_client(parser)
    got = {}
    auth_seen = threading.Event()
    back_seen = threading.Event()

    @client.on("auth")
    def on_auth(data):
        got["auth"] = data
        auth_seen.set()

    @client.on("message-back")
    def on_back(*args):
        got["back"] = list(args)
        back_seen.set()

    client.connect(
        f"http://127.0.0.1:{server.port}",
        auth={"token": "py"},
        transports=transports,
        wait_timeout=5,
    )
    try:
        assert auth_seen.wait(5)
        assert got["auth"] == {"token": "py"}
        client.emit("message", (1, "2", {"3": [True]}, b"\x01\x02"))
        assert back_seen.wait(5)
        assert got["back"] == [1, "2", {"3": [True]}, b"\x01\x02"]
        answer = client.call("message-with-ack", ("x", 2), timeout=5)
        assert tuple(answer) == ("x", 2)
    finally:
        client.disconnect()


def test_custom_namespace_and_refusal(conformance):
    """A custom namespace connects and echoes its auth; an unknown one is refused."""
    server, parser = conformance
    client = make_client(parser)
    seen = threading.Event()
    client.on("auth", lambda data: seen.set(), namespace="/custom")
    client.connect(f"http://127.0.0.1:{server.port}", namespaces=["/custom"], transports=["websocket"], wait_timeout=5)
    try:
        assert seen.wait(5)
    finally:
        client.disconnect()

    refused = make_client(parser)
    with pytest.raises(socketio.exceptions.ConnectionError) as err:
        refused.connect(f"http://127.0.0.1:{server.port}", namespaces=["/random"], transports=["websocket"], wait_timeout=5)
    assert "/random" in str(err.value)
