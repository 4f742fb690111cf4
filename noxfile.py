"""Development sessions: ``nox -s tests``, ``nox -s long``, ``nox -s lint``, ``nox -s docs``,
``nox -s bench``, ``nox -s hypercorn_compat`` (hypercorn's own tests of its WebSocket stream
and of its trio TCP server, against trioweb's stream and trioweb's TCP read and send)."""

import tarfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]

SOURCES = [
    "trioweb",
    "tests",
    "examples",
    "benchmarks",
    "docs/snippets",
    "docs/_ext",
    "tests_hypercorn",
    "noxfile.py",
]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit and integration)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def long(session: nox.Session) -> None:
    """The long suites the README's test command leaves out: two real server processes on one
    Redis (rooms, resume, kill -9) and the benchmark harness's smoke runs."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "long", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and mypy --strict on the package."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)
    session.run("mypy", "--strict", "trioweb")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the user guide with mkdocs, warnings as errors."""
    session.install("-e", ".", "-r", "docs/requirements.txt")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the side-by-side benchmarks (``nox -s bench -- --quick`` for a short run)."""
    session.install("-e", ".[redis]", "-r", "benchmarks/requirements.txt")
    session.run("python", "-m", "benchmarks", *session.posargs)


#: The hypercorn release whose own tests ``hypercorn_compat`` runs (trioweb pins hypercorn 0.18).
HYPERCORN_VERSION = "0.18.0"
#: The files taken from its sdist: the tests of its stream and of its trio TCP server, and the
#: conftest and helpers hypercorn runs them with.
HYPERCORN_TEST_FILES = (
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/helpers.py",
    "tests/trio/__init__.py",
    "tests/trio/test_keep_alive.py",
    "tests/trio/test_sanity.py",
    "tests/protocol/test_ws_stream.py",
)


@nox.session
def hypercorn_compat(session: nox.Session) -> None:
    """hypercorn's own tests, from its sdist: those of its WebSocket stream run against
    trioweb's stream, those of its trio TCP server with trioweb's read and send.

    The test files are downloaded, never kept here; tests_hypercorn/ws_stream_compat.py and
    tcp_server_compat.py swap trioweb's code in and list the tests left out, each with its
    reason.
    """
    session.install("-e", ".", "pytest>=8", "pytest-asyncio>=0.24", "pytest-trio>=0.8")
    tmp = Path(session.create_tmp()).resolve()
    sdists = tmp / "sdist"
    session.run(
        "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
        "--dest", str(sdists), f"hypercorn=={HYPERCORN_VERSION}",
    )  # fmt: skip
    (sdist,) = sdists.glob(f"[hH]ypercorn-{HYPERCORN_VERSION}.tar.gz")
    tests = tmp / "hypercorn-tests"
    with tarfile.open(sdist) as archive:
        for name in HYPERCORN_TEST_FILES:
            member = archive.getmember(f"{sdist.name.removesuffix('.tar.gz')}/{name}")
            source = archive.extractfile(member)
            assert source is not None, name
            (tests / name).parent.mkdir(parents=True, exist_ok=True)
            (tests / name).write_bytes(source.read())
    # An empty config of its own: neither trioweb's pytest settings (trio_mode) nor hypercorn's.
    (tests / "pytest.ini").write_text("[pytest]\n")
    plugin_dir = Path("tests_hypercorn").resolve()
    session.chdir(tests)
    common = ["-p", "no:trioweb", "-p", "no:cacheprovider", "-ra", "--strict-markers"]
    session.run(
        "pytest",
        "-p", "ws_stream_compat",  # from tests_hypercorn/, on PYTHONPATH
        "-p", "no:trio",  # and no trio_mode: these are pytest-asyncio tests
        *common,  # (no:trioweb: trioweb's own client fixture is not wanted here)
        "-o", "asyncio_mode=strict",
        "-o", "asyncio_default_fixture_loop_scope=function",
        HYPERCORN_TEST_FILES[-1],
        *session.posargs,
        env={"PYTHONPATH": str(plugin_dir)},
    )  # fmt: skip
    session.run(
        "pytest",
        "-p", "tcp_server_compat",  # from tests_hypercorn/: trioweb's TCP read and send
        "-p", "no:asyncio",  # these are pytest-trio tests
        *common,
        *[name for name in HYPERCORN_TEST_FILES if name.startswith("tests/trio/test_")],
        *session.posargs,
        env={"PYTHONPATH": str(plugin_dir)},
    )  # fmt: skip
