"""Development sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s docs``, ``nox -s bench``."""

import nox

nox.options.sessions = ["tests", "lint"]

SOURCES = ["trioweb", "tests", "examples", "benchmarks", "docs/snippets", "docs/_ext", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit and integration)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


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
