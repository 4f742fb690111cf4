"""Shared fixtures: a real redis-server for the broadcast tests, Chromium for the browser tests,
and the test client's way in."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import trioweb.testing


class RedisServer:
    """A redis-server of our own on a unix socket, which tests may stop and start again."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                "0",  # no TCP: nothing to clash with
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        output = []
        for line in self.process.stdout:  # bounded by pytest-timeout if it never gets ready
            output.append(line)
            if "ready to accept connections" in line.lower():
                return
        raise RuntimeError("redis-server exited before it was ready:\n" + "".join(output))

    def stop(self) -> None:
        """Kill the server at once, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server for one test. Without redis-server: a skip, but a failure in CI."""
    executable = shutil.which("redis-server")
    if executable is None:
        message = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run does)")
        pytest.skip(message)
    # A short path: unix socket paths are limited to about 100 bytes.
    directory = Path(tmp_path_factory.mktemp("redis", numbered=True))
    server = RedisServer(executable, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chromium() -> str:
    """The Chromium executable. Without it: a skip, but a failure in CI."""
    executable = shutil.which("chromium")
    if executable is None:
        message = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run does)")
        pytest.skip(message)
    return executable


#: Set (to anything) to turn the test client's direct way in off: every message of every test
#: then goes through ASGI receive() and the app's reader task, as behind a server.
THROUGH_RECEIVE = "TRIOWEB_TEST_THROUGH_RECEIVE"


@pytest.fixture(autouse=True)
def _way_in(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get(THROUGH_RECEIVE):
        # Every test client of this run is made with direct_delivery=False by default.
        defaults = trioweb.testing.TestClient.__init__.__kwdefaults__
        monkeypatch.setitem(defaults, "direct_delivery", False)
