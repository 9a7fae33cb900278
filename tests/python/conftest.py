"""Shared fixtures: start the project's binaries and read their stdout contract."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("HERALD_BIN_DIR", ROOT / "target" / "debug"))


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build --workspace --bins` first")
    return path


class Server:
    """A started server binary; `port` is what it printed after LISTENING."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [str(a) for a in args], stdout=subprocess.PIPE, text=True
        )
        self.port = None
        for _ in range(10):
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("LISTENING "):
                self.port = int(line.split()[1])
                break
        if self.port is None:
            self.stop()
            pytest.fail(f"{args[0]} did not print LISTENING")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


@pytest.fixture
def ws_peer_server():
    server = Server(binary("ws-peer"), "server", "--port", "0", "--max", "100000")
    yield server
    assert server.alive(), "the server died during the test"
    server.stop()
