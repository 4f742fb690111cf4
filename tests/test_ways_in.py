"""The in-process tests once more, through ASGI receive() and the app's reader task.

The test client hands a trioweb app's messages straight to the connection (the direct-delivery
extension); a server hands them to ASGI receive(), where the connection's reader takes them.
Whatever the in-process tests assert must hold both ways, so this runs them again with the
direct way turned off (conftest.THROUGH_RECEIVE). The tests against a real server go through
receive() anyway and are left out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import THROUGH_RECEIVE

TESTS = Path(__file__).parent
#: Tests that never use the test client (a real server, other processes, or no connection at
#: all): the way in does not change them.
REAL_SERVER = {
    "test_bench_harness.py",
    "test_broadcast_redis.py",
    "test_broadcast_redis_churn.py",
    "test_browser.py",
    "test_browser_client.py",
    "test_cli.py",
    "test_deflate.py",
    "test_edge.py",
    "test_hostile.py",
    "test_http2_attack.py",
    "test_http_edge.py",
    "test_integration.py",
    "test_phases.py",
    "test_resume_processes.py",
    "test_rooms_processes.py",
    "test_rooms_redis.py",
    "test_rooms_review.py",
    "test_soak.py",
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
