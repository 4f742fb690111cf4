"""The session line (logger ``trioweb.session``), JSON logs, and the rate-limited warning."""

import json
import logging
import re
import signal
import subprocess
import sys

import pytest
import trio
import trio.testing
from processes import (
    ROOT,
    announced_url,
    env_with_tests,
    free_port,
    open_trioweb,
    read_to_end,
    reap,
    refuses,
)
from session_log_app import app
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from trioweb.logs import JSONFormatter, RateLimitedWarning, logging_config
from trioweb.server import serve


class Lines(logging.Handler):
    """The session records, as they are logged."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, count: int) -> list[str]:
        with trio.fail_after(10):
            while len(self.records) < count:
                await self.changed.wait()
        return [record.getMessage() for record in self.records]


@pytest.fixture
async def server(nursery):
    lines = Lines()
    session = logging.getLogger("trioweb.session")
    session.addHandler(lines)
    session.setLevel(logging.INFO)
    (url,) = await nursery.start(
        lambda task_status: serve(app, port=0, handle_signals=False, task_status=task_status)
    )
    try:
        yield url.replace("http://", "ws://"), lines
    finally:
        session.removeHandler(lines)
        session.setLevel(logging.NOTSET)
        nursery.cancel_scope.cancel()


LINE = re.compile(
    r"session (?P<route>\S+) path=(?P<path>\S+) client=127\.0\.0\.1:(?P<port>\d+) "
    r"closed_by=(?P<by>\w+) code=(?P<code>\S+) reason=(?P<reason>\".*\") "
    r"duration=(?P<duration>[0-9.]+)s in=(?P<min>\d+)/(?P<bin>\d+)B "
    r"out=(?P<mout>\d+)/(?P<bout>\d+)B$"
)


async def test_the_clients_close_code_and_the_counts(server):
    url, lines = server
    async with open_websocket_url(url + "/ws/lot") as ws:
        for message in ["a", "bb", "héé"]:  # 1 + 2 + 5 bytes
            await ws.send_message(message)
            await ws.get_message()
        await ws.send_message(b"\x00" * 10)
        await ws.get_message()
        await ws.aclose(4001, "bye")
    (line,) = await lines.wait_for(1)
    found = LINE.match(line)
    assert found, line
    assert found["route"] == "/ws/{room}" and found["path"] == "/ws/lot"
    assert (found["by"], found["code"], found["reason"]) == ("client", "4001", '"bye"')
    assert (found["min"], found["bin"], found["mout"], found["bout"]) == ("4", "18", "4", "18")
    fields = lines.records[0].trioweb_session
    assert fields["code"] == 4001 and fields["bytes_in"] == 18


async def test_an_error_closes_with_1011_from_the_server(server):
    url, lines = server
    async with open_websocket_url(url + "/boom") as ws:
        await ws.send_message("go")
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
    (line,) = await lines.wait_for(1)
    found = LINE.match(line)
    assert found, line
    assert (found["by"], found["code"], found["min"], found["mout"]) == ("server", "1011", "1", "0")


async def test_a_message_over_the_limit_closes_with_1009_from_the_server(server):
    url, lines = server
    async with open_websocket_url(url + "/ws/big") as ws:
        await ws.send_message("x" * 500)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1009
    (line,) = await lines.wait_for(1)
    found = LINE.match(line)
    assert found, line
    assert (found["by"], found["code"]) == ("server", "1009")
    assert "over the limit" in found["reason"]


async def test_a_denied_handshake_has_no_session_line(server):
    url, lines = server
    with pytest.raises(ConnectionRejected):
        async with open_websocket_url(url + "/private"):
            pass
    async with open_websocket_url(url + "/ws/after") as ws:
        await ws.aclose(1000)
    (line,) = await lines.wait_for(1)  # only the second socket's
    assert "path=/ws/after" in line


def test_the_json_format_carries_the_session_fields():
    record = logging.LogRecord("trioweb.session", logging.INFO, "", 0, "session %s", ("x",), None)
    record.trioweb_session = {"code": 4001, "reason": "bye", "bytes_in": 3}
    entry = json.loads(JSONFormatter().format(record))
    assert entry["message"] == "session x"
    assert (entry["code"], entry["reason"], entry["bytes_in"]) == (4001, "bye", 3)
    assert entry["logger"] == "trioweb.session" and entry["level"] == "INFO"
    with pytest.raises(ValueError, match="unknown log format"):
        logging_config("xml")


async def test_trioweb_run_logs_json_lines():
    process = await open_trioweb(
        "run", "tests.session_log_app:app", "--port", "0", "--log-format", "json",
        "--no-access-log",
    )  # fmt: skip
    try:
        url, _, _ = await announced_url(process)
        url = url.replace("http://", "ws://")
        async with open_websocket_url(url + "/ws/json") as ws:
            await ws.send_message("hi")
            await ws.get_message()
            await ws.aclose(4001, "bye")
        errors = b""
        with trio.fail_after(20):
            while b"trioweb.session" not in errors:
                chunk = await process.stderr.receive_some()
                assert chunk, errors
                errors += chunk
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            await process.wait()
    finally:
        await reap(process)
    line = next(line for line in errors.decode().splitlines() if "trioweb.session" in line)
    entry = json.loads(line)
    assert (entry["closed_by"], entry["code"], entry["reason"]) == ("client", 4001, "bye")
    assert (entry["messages_in"], entry["bytes_in"], entry["messages_out"]) == (1, 2, 1)
    assert entry["route"] == "/ws/{room}" and entry["path"] == "/ws/json"


async def test_a_repeated_warning_is_one_line_and_a_summary(autojump_clock, caplog):
    logger = logging.getLogger("trioweb.test.rate")
    limited = RateLimitedWarning(logger, interval=10.0)
    with caplog.at_level(logging.WARNING, logger="trioweb.test.rate"):
        for _ in range(50):  # a failure a tenth of a second, for 5 s
            limited.warning("publish to %r failed, message lost: %s", "room", "down")
            await trio.sleep(0.1)
        assert len(caplog.records) == 1
        limited.flush()  # publishing works again, but within the interval: still quiet
        assert len(caplog.records) == 1
        await trio.sleep(5.5)
        limited.flush()  # works again, later: the count
        assert len(caplog.records) == 2
        assert "(the last of 49 more like it in the last 10 s)" in caplog.records[1].getMessage()
        limited.flush()
        assert len(caplog.records) == 2
        await trio.sleep(10)
        for _ in range(250):  # a longer one: a line every 10 s, with its count
            limited.warning("publish to %r failed, message lost: %s", "room", "down")
            await trio.sleep(0.1)
    messages = [record.getMessage() for record in caplog.records[2:]]
    assert len(messages) == 3, messages
    assert "more like it" not in messages[0]
    assert re.search(r"\(and (99|100) more like it in the last 10 s\)$", messages[1])


async def test_app_run_shows_the_session_lines_and_the_drain():
    # `python app.py` ending in app.run(): the session line (the first ask) and the
    # drain summary were INFO lines on an unconfigured logger, so nothing was shown at all.
    port = free_port()
    code = f"from session_log_app import app; app.run(port={port})"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env_with_tests(),
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(20):
            while True:  # polled: the server starts in its own time
                if not refuses(port):
                    break
                await trio.sleep(0.1)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/lot") as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
                await ws.aclose(4001, "bye")
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            stderr = await read_to_end(process.stderr)
    finally:
        await reap(process)
    text = stderr.decode()
    assert "session /ws/{room} path=/ws/lot" in text and "code=4001" in text, text
    assert "drained in" in text, text
