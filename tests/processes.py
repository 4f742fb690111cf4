"""Helpers for tests that run the server in another process (`trioweb run`, ``python -c``):
start it, wait (bounded) until it serves, read its output, find its workers, stop and reap it.

Every wait here has a deadline: a server that never comes up fails the test, it never hangs it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

#: The checkout: `trioweb run` is started here so that ``examples.*`` import.
ROOT = Path(__file__).resolve().parent.parent
#: Where the test apps (``metrics_app``, ``clash_app``, ...) are, for ``PYTHONPATH``.
TESTS = ROOT / "tests"
#: The URL `trioweb run` (and hypercorn) prints once it listens.
URL = rb"http://[\d.]+:(\d+)"


def env_with_tests(**extra: str) -> dict[str, str]:
    """This process's environment with the checkout and tests/ importable, plus ``extra``."""
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", **extra}


def run_trioweb(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trioweb ARGS`` to its end from the checkout, the test apps importable;
    its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "trioweb", *args],
        cwd=ROOT,
        env=env if env is not None else env_with_tests(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def open_trioweb(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stderr: int = subprocess.PIPE,
    new_session: bool = False,
) -> trio.Process:
    """Start ``python -m trioweb ARGS`` in ``cwd`` (with ``env``, this process's by default),
    stdout piped (for :func:`announced_url`), stderr piped unless told otherwise; in a session
    and process group of its own with ``new_session``, as a shell gives a foreground job.
    Reap it with :func:`reap` in a ``finally``."""
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioweb", *args],
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=new_session,
    )


async def announced_url(process: trio.Process) -> tuple[str, int, bytes]:
    """Read ``process``'s stdout until it announces its URL (within 30 s); the URL, its port, and
    all read so far. Fails if the process exits first."""
    output = b""
    with trio.fail_after(30):
        while (found := re.search(URL, output)) is None:
            assert process.stdout is not None
            chunk = await process.stdout.receive_some()
            assert chunk, f"trioweb run exited without announcing a URL: {output!r}"
            output += chunk
    return found.group().decode(), int(found.group(1)), output


async def read_all(stream: trio.abc.ReceiveStream | None, into: list[bytes]) -> None:
    """Append every chunk of ``stream`` to ``into`` until it ends (the process closed it)."""
    assert stream is not None
    while chunk := await stream.receive_some():
        into.append(chunk)


async def read_to_end(stream: trio.abc.ReceiveStream | None) -> bytes:
    """All of ``stream`` until it ends (the process closed it); the caller bounds the wait."""
    chunks: list[bytes] = []
    await read_all(stream, chunks)
    return b"".join(chunks)


async def reap(process: trio.Process) -> None:
    """Kill ``process`` if it still runs and wait for it: a test's ``finally``, so that no
    server outlives a failed test."""
    if process.returncode is None:
        process.kill()
        await process.wait()


async def terminate(process: trio.Process) -> int:
    """SIGTERM ``process`` and wait (at most 20 s: a drain's bound) for it to exit; its status."""
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        return await process.wait()


async def start_cli(*args: str, tmp: Path, new_session: bool = False) -> tuple[trio.Process, int]:
    """Start `trioweb run` with ``args`` and its temporary files in ``tmp`` (in a session and
    process group of its own with ``new_session``); return it and the port it announces."""
    process = await open_trioweb(
        "run",
        *args,
        env=env_with_tests(TMPDIR=str(tmp)),
        stderr=subprocess.DEVNULL,
        new_session=new_session,
    )
    _, port, _ = await announced_url(process)
    return process, port


def refuses(port: int) -> bool:
    """Whether nothing listens on ``port`` any more."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def free_port() -> int:
    """A port nothing listens on right now (for an option that takes a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(child) for child in file.read().split()]


def pid_is_worker(pid: int) -> bool:
    """Whether ``pid`` runs a spawned worker (not multiprocessing's resource tracker)."""
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return b"spawn_main" in file.read()


def workers_of(pid: int) -> set[int]:
    """The worker processes of supervisor ``pid`` (Linux), skipping any that exit meanwhile."""
    found = set()
    for child in children(pid):
        with contextlib.suppress(FileNotFoundError):  # exited meanwhile
            if pid_is_worker(child):
                found.add(child)
    return found


def running(pid: int) -> bool:
    """Whether process ``pid`` exists (reaped: its supervisor has seen it exit)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_all(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` that still exists: cleanup of workers a failed test left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
