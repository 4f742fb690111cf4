"""What `trioweb run` cannot honour is one line on stderr and exit 2 (docs/deployment.md: "the
command line", which a process manager must not restart on): a bad value, an endpoint
(`--metrics`, `--health`) the app already serves (and its twin from code, `serve_metrics()` /
`serve_health()`), a missing multiprocess directory, a missing prometheus-client.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from processes import (
    ROOT,
    env_with_tests,
    free_port,
    run_trioweb,
)

from trioweb import App


@pytest.mark.parametrize(
    ("target", "flag", "path"),
    [
        ("clash_app:metrics", "--metrics", "/metrics"),
        ("clash_app:spa", "--metrics", "/metrics"),
        ("clash_app:spa", "--health", "/healthz"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_endpoint_the_app_already_serves_is_a_one_line_error(target, flag, path, workers):
    # Before, the app's route answered first and `--metrics` (or `--health`) silently served
    # the app's page: a scrape that fails to parse, a "healthy" SPA page.
    result = run_trioweb("run", target, "--port", "0", "--workers", workers, flag)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"trioweb: error: {flag}: GET {path} is already served by the app")


def test_serve_metrics_and_health_refuse_a_path_the_app_serves():
    app = App()

    @app.get("/{page:path}")
    async def index(request: object, page: str) -> None:
        """Every GET."""

    with pytest.raises(ValueError, match=r"GET /metrics is already served by the app"):
        app.serve_metrics()
    with pytest.raises(ValueError, match=r"GET /healthz is already served by the app"):
        app.serve_health()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--port", "99999"),
        ("--port", "-1"),
        ("--metrics-port", "99999"),
        ("--graceful-timeout", "nan"),
        ("--graceful-timeout", "-1"),
    ],
)
def test_a_bad_value_on_the_command_line_is_one_line_and_exit_2(option, value):
    # docs/deployment.md: exit 2 is "the command line: a bad value", which a process manager
    # must not restart on; these were exit 1, a traceback, or a traceback at shutdown.
    result = run_trioweb("run", "metrics_app:app", option, value)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"trioweb: error: {option} ")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_multiprocess_directory_that_does_not_exist_is_one_line(tmp_path, workers):
    # PROMETHEUS_MULTIPROC_DIR set to a path that is not there (a volume not mounted): it was a
    # traceback from prometheus-client (in every worker).
    missing = tmp_path / "not-mounted"
    result = run_trioweb(
        "run", "clash_app:spa", "--port", "0", "--workers", workers,
        "--metrics-port", str(free_port()),
        env=env_with_tests(PROMETHEUS_MULTIPROC_DIR=str(missing)),
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line == f"trioweb: error: PROMETHEUS_MULTIPROC_DIR={missing} is not a directory"


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("flag", [["--metrics"], ["--metrics-port", "9"]])
def test_metrics_without_prometheus_client_is_one_line(workers, flag):
    # `pip install trioweb` without the [metrics] extra: a traceback from deep inside before.
    # (prometheus-client is hidden from this process as if it were not installed.)
    code = (
        "import sys; sys.modules['prometheus_client'] = None; from trioweb.cli import main; "
        f"sys.exit(main(['run', 'metrics_app:app', '--port', '0', '--workers', '{workers}', "
        f"*{flag!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env_with_tests(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line == (
        f"trioweb: error: {flag[0]} needs prometheus-client: pip install 'trioweb[metrics]'"
    )
