"""The in-process tests once more, through ASGI receive() and the app's reader task.

The test client hands a trioweb app's messages straight to the connection (the direct-delivery
extension); a server hands them to ASGI receive(), where the connection's reader takes them.
Whatever the in-process tests assert must hold both ways, so this runs them again with the
direct way turned off (conftest.THROUGH_RECEIVE). The tests against a real server go through
receive() anyway and are left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import THROUGH_RECEIVE

TESTS = Path(__file__).parent
#: Tests that never use the test client (a real server, other processes, or no connection at
#: all): the way in does not change them. (test_direct_delivery.py runs both ways itself, over a
#: real server.) test_the_skipped_modules_never_use_the_test_client checks the list.
REAL_SERVER = {
    "test_bench_harness.py",
    "test_broadcast_redis.py",
    "test_broadcast_redis_churn.py",
    "test_browser.py",
    "test_browser_client.py",
    "test_cli.py",
    "test_cli_errors.py",
    "test_deflate.py",
    "test_direct_delivery.py",
    "test_edge.py",
    "test_health.py",
    "test_hostile.py",
    "test_http2_attack.py",
    "test_http_edge.py",
    "test_hypercorn_tcp.py",
    "test_integration.py",
    "test_keepalive.py",
    "test_metrics.py",
    "test_metrics_workers.py",
    "test_phases.py",
    "test_resume_processes.py",
    "test_review2.py",
    "test_review_perf.py",
    "test_rooms_processes.py",
    "test_rooms_redis.py",
    "test_rooms_review.py",
    "test_session_log.py",
    "test_soak.py",
    "test_startup.py",
    "test_ways_in.py",
    "test_wire_h2.py",
    "test_ws_stream_unit.py",
}


@pytest.mark.skipif(bool(os.environ.get(THROUGH_RECEIVE)), reason="already through receive()")
@pytest.mark.timeout(300)
def test_the_in_process_tests_pass_through_receive_too() -> None:
    modules = sorted(p.name for p in TESTS.glob("test_*.py") if p.name not in REAL_SERVER)
    assert "test_runtime.py" in modules and "test_testclient.py" in modules
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *modules],
        cwd=TESTS,
        env={**os.environ, THROUGH_RECEIVE: "1"},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


#: Modules left out although they open the test client: beside a real redis-server or browser,
#: which is what they test, and which would double their time.
INCIDENTAL = {"test_broadcast_redis.py", "test_browser.py", "test_browser_client.py"}


def test_the_skipped_modules_never_use_the_test_client() -> None:
    # A module left out above that opened the test client would lose its second run silently.
    for name in sorted(REAL_SERVER - INCIDENTAL):
        source = (TESTS / name).read_text()
        assert not re.search(r"\btest_client\(|\bTestClient\(|\bclient\.websocket\(", source), name
