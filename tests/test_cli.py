"""`trioweb run`: clear errors for bad targets, and a real server that stops cleanly."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioweb", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module:app", "cannot import module 'no_such_module': not found"),
        ("examples.echo:missing", "module 'examples.echo' has no attribute 'missing'"),
        ("examples.echo:App", "examples.echo:App is a type, not a trioweb App"),
        (":app", "no module in ':app' (expected MODULE:APP, e.g. examples.echo:app)"),
    ],
)
def test_bad_targets_get_a_one_line_error(target, message):
    result = run_cli("run", target)
    assert result.returncode == 2
    assert result.stderr == f"trioweb: error: {message}\n"
    assert "Traceback" not in result.stderr


def test_a_module_failing_at_import_gets_a_one_line_error(tmp_path):
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('config missing')\n")
    result = run_cli("run", "broken_app:app", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "trioweb: error: importing 'broken_app' failed: RuntimeError: config missing\n"
    )


async def start(*args: str) -> tuple[trio.Process, str]:
    """Start `trioweb run` and return the process and the URL it announces on stdout."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioweb", "run", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    output = b""
    with trio.fail_after(30):
        while (found := re.search(rb"http://[\d.]+:\d+", output)) is None:
            chunk = await process.stdout.receive_some()
            assert chunk, f"trioweb run exited without announcing a URL: {output!r}"
            output += chunk
    return process, found.group().decode()


@pytest.mark.parametrize(
    ("workers", "stop_signal"), [(1, signal.SIGINT), (1, signal.SIGTERM), (2, signal.SIGTERM)]
)
async def test_run_serves_and_a_signal_closes_sockets_with_1001(workers, stop_signal):
    process, url = await start("examples.echo:app", "--port", "0", "--workers", str(workers))
    try:
        ws_url = url.replace("http://", "ws://") + "/ws"
        async with open_websocket_url(ws_url) as ws:
            await ws.send_message("over the wire")
            assert await ws.get_message() == "over the wire"
            process.send_signal(stop_signal)
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(20):
                await ws.get_message()
        assert closed.value.reason.code == 1001
        assert closed.value.reason.reason == "server shutting down"
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
