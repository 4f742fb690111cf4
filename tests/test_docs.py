"""The docs cannot rot: every code block in docs/ and README.md is run, or at least checked.

The convention (docs/contributing-docs.md says the same for writers):

1. Code worth running lives in ``docs/snippets/`` and a page includes it with
   pymdownx.snippets, so that what readers see is what the tests run::

       ```python title="chat.py"
       --8<-- "chat.py"
       ```

   - An app snippet (``chat.py``) is driven through the test client by a test of this file
     that loads it with ``snippet("chat")``, or by a ``test_*.py`` snippet that imports it.
   - A ``test_*.py`` snippet is a pytest file shown to readers: it runs here, as pytest would
     run it (pytest-trio, the trioweb plugin and its ``client`` fixture included).
   - Any other file (``nginx.conf``, ``trioweb.service``) is checked by a test of this file
     that names it.

   Every file in docs/snippets/ must be both tested and included by some page.

2. A ```python block written in a page is compiled (top-level ``await`` allowed), the names
   it imports from trioweb must exist, and so must the attributes it uses on the usual names
   (``ws``, ``request``, ``app``, ``hub``, ``client``...). An HTML comment on the line right
   before the fence asks for more, or less:

   - ``<!-- docs-test: run -->``: a complete program. It is executed, then every
     ``async def test_*()`` it defines is run under trio (a parameter named
     ``autojump_clock`` gets trio's fake clock).
   - ``<!-- docs-test: continue -->``: the same, in what the page's previous run or continue
     block left behind, like the next cell of a notebook.
   - ``<!-- docs-test: compile-only -->``: another framework's code (Quart, Starlette): only
     compiled.

3. In ```bash blocks, every ``trioweb`` command must parse with trioweb's own CLI parser,
   options spelled out (and name a loadable app when its module exists), every ``nox -s``
   session must exist, and every ``trioweb[extra]`` or ``.[extra]`` must be an extra of the
   package. ```json blocks must parse; ```text (diagrams, output) and ```markdown (the docs'
   own syntax) blocks are not code. Any other language must be an include from docs/snippets.

4. Pages that name things in the code must name real ones: the API reference pages list every
   public name, and a test a page names (``test_limits.py::test_...``) exists.

Breaking any example, in a snippet or in a page, fails a test here; the whole file runs in a
couple of seconds.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect
import itertools
import json
import logging
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import tomllib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import helpers
import pytest
import trio
import trio.testing

import trioweb
import trioweb.broadcast
import trioweb.rooms
import trioweb.testing
from trioweb.cli import AppLoadError, _parser, load_app
from trioweb.testing import TestClient, WebSocketClosed, WebSocketDenied

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
#: Files of docs/snippets/ that are tooling, not content.
SNIPPET_TOOLING = {"ruff.toml"}


# -- reading the pages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    marker: str | None  # what the <!-- docs-test: ... --> comment before it says

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def includes(self) -> list[str]:
        """The snippet files this block includes, if it is an include block."""
        lines = [line.strip() for line in self.body.splitlines() if line.strip()]
        found = [re.fullmatch(r'--8<--\s+"([^"]+)"', line) for line in lines]
        if lines and all(found):
            return [m.group(1).split(":")[0] for m in found if m]
        return []


FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<info>.*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>[\w-]+)\s*-->\s*$")
MARKERS = {"run", "continue", "compile-only"}


def pages() -> list[Path]:
    found = [p for p in sorted(DOCS.rglob("*.md")) if SNIPPETS not in p.parents]
    return [*found, ROOT / "README.md"]


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        marker = MARKER.match(lines[i - 1]) if i else None
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = lines[j].strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                break
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        found.append(
            Block(page, i + 1, opening["lang"].lower(), "\n".join(body), marker and marker["what"])
        )
        i = j + 1
    return found


ALL_BLOCKS = [block for page in pages() for block in blocks_of(page)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("python", "py") and not b.includes]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]


def ids(blocks: list[Block]) -> list[str]:
    return [block.where for block in blocks]


def test_every_block_follows_the_convention() -> None:
    problems = []
    for block in ALL_BLOCKS:
        if block.marker is not None and block.marker not in MARKERS:
            problems.append(f"{block.where}: unknown marker 'docs-test: {block.marker}'")
        if block.marker is not None and block.lang not in ("python", "py"):
            problems.append(f"{block.where}: docs-test markers are for python blocks")
        if block.marker is not None and block.includes:
            problems.append(f"{block.where}: an include is tested through its snippet file")
        known = ("python", "py", "bash", "sh", "shell", "console", "json", "text", "markdown", "")
        if block.lang not in known and not block.includes:
            problems.append(
                f"{block.where}: a {block.lang} block must be included from docs/snippets, "
                "with a test of its own (see tests/test_docs.py)"
            )
        for name in block.includes:
            if not (SNIPPETS / name).is_file():
                problems.append(f"{block.where}: includes {name}, not in docs/snippets/")
    assert not problems, "\n".join(problems)


def test_json_blocks_parse() -> None:
    for block in ALL_BLOCKS:
        if block.lang == "json" and not block.includes:
            json.loads(block.body)


# -- python blocks ----------------------------------------------------------------------------


def compile_block(block: Block) -> types.CodeType:
    # Blank lines first, so that tracebacks give the line numbers of the page.
    source = "\n" * block.line + textwrap.dedent(block.body)
    return compile(source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def attributes_of(kind: Any) -> set[str]:
    """What ``kind`` (a class or module) offers: its attributes and those its code assigns."""
    names = set(dir(kind))
    for cls in getattr(kind, "__mro__", ()):
        if cls.__module__.split(".")[0] not in ("trioweb",):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and isinstance(node.ctx, ast.Store)
            ):
                names.add(node.attr)
    return names


#: The names the docs give trioweb's objects, and what each may be.
USUAL_NAMES: dict[str, tuple[Any, ...]] = {
    "ws": (trioweb.WebSocket, trioweb.testing.TestWebSocket),
    "request": (trioweb.Request,),
    "response": (trioweb.Response, trioweb.testing.TestResponse),
    "app": (trioweb.App,),
    "hub": (trioweb.broadcast.Broadcast,),
    "sub": (trioweb.broadcast.Subscription,),
    "subscription": (trioweb.broadcast.Subscription,),
    "client": (trioweb.testing.TestClient,),
    "rooms": (trioweb.rooms.Rooms,),
    "room": (trioweb.rooms.Room,),
    "member": (trioweb.rooms.Member,),
    "nursery": (trioweb.ConnectionNursery, trio.Nursery),
    "trioweb": (trioweb,),
}


def api_problems(block: Block) -> list[str]:
    """Imports from trioweb that do not exist, and attributes trioweb's objects do not have."""
    problems = []
    for node in ast.walk(ast.parse(textwrap.dedent(block.body))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "trioweb":
            module = importlib.import_module(node.module or "")
            problems += [
                f"{block.where}: from {node.module} import {alias.name}: no such name"
                for alias in node.names
                if not hasattr(module, alias.name)
            ]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trioweb":
                    importlib.import_module(alias.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in USUAL_NAMES
            and isinstance(node.ctx, ast.Load)
        ):
            kinds = USUAL_NAMES[node.value.id]
            if not any(node.attr in attributes_of(kind) for kind in kinds):
                what = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
                problems.append(
                    f"{block.where}: {node.value.id}.{node.attr}: no such attribute of {what}"
                )
    return problems


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=ids(PYTHON_BLOCKS))
def test_python_block_compiles_and_names_real_api(block: Block) -> None:
    compile_block(block)
    if block.marker != "compile-only":
        assert not api_problems(block), "\n".join(api_problems(block))


def run_tests_defined(namespace: dict[str, Any], before: set[str], block: Block) -> None:
    """Run the ``async def test_*()`` functions a block defined, each in its own trio run."""
    for name, value in list(namespace.items()):
        if name in before or not name.startswith("test_"):
            continue
        if not inspect.iscoroutinefunction(value):
            continue
        params = list(inspect.signature(value).parameters)
        assert set(params) <= {"autojump_clock"}, (
            f"{block.where}: {name} takes {params}: only autojump_clock is offered here; "
            "a test that needs fixtures belongs in a docs/snippets/test_*.py file"
        )
        if params:
            clock = trio.testing.MockClock(autojump_threshold=0)
            trio.run(value, clock, clock=clock)
        else:
            trio.run(value)


RUN_PAGES = sorted({b.page for b in PYTHON_BLOCKS if b.marker in ("run", "continue")})


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUN_PAGES])
def test_run_blocks_run(page: Path) -> None:
    namespace: dict[str, Any] | None = None
    for block in blocks_of(page):
        if block.lang not in ("python", "py") or block.marker not in ("run", "continue"):
            continue
        if block.marker == "run" or namespace is None:
            assert block.marker == "run", f"{block.where}: 'continue' with nothing to continue"
            namespace = {"__name__": "__docs_block__"}
        before = set(namespace)
        code = compile_block(block)
        if code.co_flags & inspect.CO_COROUTINE:  # top-level await

            async def main(code: types.CodeType = code, ns: dict[str, Any] = namespace) -> None:
                await eval(code, ns)

            trio.run(main)
        else:
            exec(code, namespace)
        run_tests_defined(namespace, before, block)


# -- shell blocks -----------------------------------------------------------------------------


def commands(script: str) -> Iterator[list[str]]:
    """Each simple command of a shell script, environment assignments left out."""
    for line in script.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("$ ")
        for part in re.split(r"&&|\|\||;|\|", line):
            argv = shlex.split(part, comments=True)
            while argv and re.fullmatch(r"\w+=.*", argv[0]):
                argv.pop(0)
            if argv:
                yield argv


def snippet_or_module_exists(module: str) -> bool:
    top = module.split(".")[0]
    return (SNIPPETS / f"{top}.py").is_file() or importlib.util.find_spec(top) is not None


def strict_parser() -> argparse.ArgumentParser:
    """trioweb's own parser, without abbreviations: the docs spell every option out."""
    parser = _parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += action.choices.values()
    for each in parsers:
        each.allow_abbrev = False
    return parser


def check_trioweb_command(args: list[str], where: str) -> None:
    parser = strict_parser()
    try:
        parsed = parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `trioweb {' '.join(args)}` does not parse")
    target = getattr(parsed, "target", None)
    if target and snippet_or_module_exists(target.partition(":")[0]):
        path, modules = list(sys.path), set(sys.modules)
        sys.path.insert(0, str(SNIPPETS))
        try:
            load_app(target)
        except AppLoadError as exc:
            pytest.fail(f"{where}: `trioweb {' '.join(args)}`: {exc}")
        finally:  # leave no snippet importable, or imported, behind
            sys.path[:] = path
            for name in set(sys.modules) - modules:
                if SNIPPETS in Path(getattr(sys.modules[name], "__file__", None) or "/").parents:
                    del sys.modules[name]


NOX_SESSIONS = set(re.findall(r"^def (\w+)\(session", (ROOT / "noxfile.py").read_text(), re.M))
EXTRAS = set(
    tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=ids(SHELL_BLOCKS))
def test_shell_commands_are_real(block: Block) -> None:
    for argv in commands(block.body):
        program = Path(argv[0]).name
        if program == "trioweb":
            check_trioweb_command(argv[1:], block.where)
        elif program.startswith("python") and argv[1:3] == ["-m", "trioweb"]:
            check_trioweb_command(argv[3:], block.where)
        elif program == "nox" and "-s" in argv:
            session = argv[argv.index("-s") + 1]
            assert session in NOX_SESSIONS, f"{block.where}: no nox session {session!r}"
        for extra in re.findall(r"(?:trioweb|\.)\[([\w,]+)\]", " ".join(argv)):
            assert set(extra.split(",")) <= EXTRAS, f"{block.where}: no extra trioweb[{extra}]"


# -- snippets ---------------------------------------------------------------------------------

_copies = itertools.count()


def snippet(name: str) -> types.ModuleType:
    """A fresh copy of docs/snippets/NAME.py: a new app each time, so tests share nothing."""
    path = SNIPPETS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_snippet_{name}_{next(_copies)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snippet_files() -> list[Path]:
    return sorted(p for p in SNIPPETS.iterdir() if p.is_file() and p.name not in SNIPPET_TOOLING)


def test_every_snippet_is_shown_and_tested() -> None:
    shown = {name for block in ALL_BLOCKS for name in block.includes}
    this_file = Path(__file__).read_text()
    loaded_here = set(re.findall(r'snippet\("(\w+)"\)', this_file))
    imported_by_tests = {
        name
        for test in SNIPPETS.glob("test_*.py")
        for name in re.findall(r"^(?:from|import) (\w+)", test.read_text(), re.M)
    }
    problems = []
    for path in snippet_files():
        if path.name not in shown:
            problems.append(f"docs/snippets/{path.name} is included by no page")
        if path.name.startswith("test_"):
            continue  # run by test_snippet_test_files_pass
        tested = (
            path.stem in loaded_here or path.stem in imported_by_tests
            if path.suffix == ".py"
            else f'"{path.name}"' in this_file
        )
        if not tested:
            problems.append(f"docs/snippets/{path.name} is tested by nothing")
    assert not problems, "\n".join(problems)


def test_snippet_test_files_pass(pytester: pytest.Pytester) -> None:
    files = [str(p) for p in sorted(SNIPPETS.glob("test_*.py"))]
    result = pytester.runpytest_inprocess(*files, "-p", "no:cacheprovider", "-q")
    outcomes = result.parseoutcomes()
    assert result.ret == 0, "the test files of docs/snippets failed:\n" + result.stdout.str()
    assert outcomes.get("passed", 0) >= len(files)


# The tutorial (the final chat.py and its tests run in test_snippet_test_files_pass).


async def test_tutorial_echo() -> None:
    async with TestClient(snippet("echo").app) as client, client.websocket("/ws") as ws:
        await ws.send("hi")
        assert await ws.receive() == "hi"


async def test_tutorial_lobby() -> None:
    async with TestClient(snippet("chat_lobby").app) as client:
        async with client.websocket("/chat?name=ann") as ann, client.websocket("/chat") as other:
            await other.send_json({"text": "hello"})
            said = {"name": "anonymous", "text": "hello"}
            assert await ann.receive_json() == said
            assert await other.receive_json() == said


async def test_tutorial_rooms() -> None:
    async with TestClient(snippet("chat_rooms").app) as client:
        async with (
            client.websocket("/chat/a?name=ann") as ann,
            client.websocket("/chat/b?name=ben") as ben,
        ):
            await ben.send_json({"text": "b only"})
            assert await ben.receive_json() == {"name": "ben", "text": "b only"}
            await ann.send_json({"text": "a only"})
            assert await ann.receive_json() == {"name": "ann", "text": "a only"}


async def test_tutorial_presence() -> None:
    chat = snippet("chat_presence")
    async with TestClient(chat.app) as client:
        async with client.websocket("/chat/a?name=ann") as ann:
            assert await ann.receive_json() == {"type": "presence", "names": ["ann"]}
            async with client.websocket("/chat/a?name=ben") as ben:
                both = {"type": "presence", "names": ["ann", "ben"]}
                assert await ann.receive_json() == both
                assert await ben.receive_json() == both
                await ben.send_json({"text": "bye"})
                assert (await ann.receive_json())["text"] == "bye"
                await ben.close()  # the client leaves: ben's handler is cancelled
            assert await ann.receive_json() == {"type": "presence", "names": ["ann"]}
            async with client.websocket("/chat/a?name=ann") as second_tab:
                # Two presences of one user: one name.
                assert await second_tab.receive_json() == {"type": "presence", "names": ["ann"]}
                presence = chat.rooms.get("a").presence
                assert (len(presence), presence.users()) == (2, ["ann"])
                assert [len(entries) for entries in presence.by_user().values()] == [2]


async def test_tutorial_chat_on_redis(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers of the final chat.py share rooms, presence included, through Redis."""
    monkeypatch.setenv("CHAT_BROKER_URL", redis_server.url)
    first, second = snippet("chat"), snippet("chat")
    assert first.hub.url == redis_server.url
    with trio.fail_after(10):
        async with TestClient(first.app) as one, TestClient(second.app) as two:
            async with one.websocket("/chat/r?name=ann") as ann:
                assert await ann.receive_json() == {"type": "presence", "names": ["ann"]}
                async with two.websocket("/chat/r?name=ben") as ben:
                    both = {"type": "presence", "names": ["ann", "ben"]}
                    assert await ben.receive_json() == both
                    assert await ann.receive_json() == both
                    await ann.send_json({"text": "over redis"})
                    assert (await ben.receive_json())["text"] == "over redis"
                    assert (await ann.receive_json())["text"] == "over redis"
                assert await ann.receive_json() == {"type": "presence", "names": ["ann"]}


# Home and concepts.


async def test_home_ticker(autojump_clock: trio.testing.MockClock) -> None:
    async with TestClient(snippet("ticker").app) as client:
        async with client.websocket("/ticker/ACME") as ws:
            start = trio.current_time()
            assert await ws.receive_json() == {"symbol": "ACME", "price": 100.0}
            assert await ws.receive_json() == {"symbol": "ACME", "price": 101.0}
            assert trio.current_time() - start == pytest.approx(1)
            await ws.send_json({"action": "stop"})
            with pytest.raises(WebSocketClosed) as closed:
                while True:
                    await ws.receive()
    assert closed.value.code == 1000


async def test_tasks_outlive_the_handler_until_the_client_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with TestClient(snippet("tasks").app, receive_timeout=10) as client:
        async with client.websocket("/ticks") as ws:
            assert await ws.receive_json() == {"tick": 1}
            await ws.send_json({"every": 5})
            assert await ws.receive_json() == {"tick": 2}  # the first pause was 1 s
            before = trio.current_time()
            assert await ws.receive_json() == {"tick": 3}
            assert trio.current_time() - before == pytest.approx(5)
        # Leaving the block waited for the connection to end: both tasks were cancelled.


async def test_the_close_table(caplog: pytest.LogCaptureFixture) -> None:
    app = snippet("close_table").app

    async def closed(path: str, *send: str) -> WebSocketClosed:
        async with client.websocket(path) as ws:
            for message in send:
                await ws.send(message)
            with pytest.raises(WebSocketClosed) as info:
                while True:
                    await ws.receive()
        return info.value

    async def denied(path: str) -> WebSocketDenied:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket(path):
                pass
        return info.value

    async with TestClient(app) as client:
        assert (await closed("/done")).code == 1000
        assert (await closed("/bug")).code == 1011
        assert "unhandled error in WebSocket handler for /bug" in caplog.text
        assert (await denied("/early-bug")).status_code == 500
        early = await denied("/early-abort")
        assert (early.status_code, early.body) == (401, b"log in first")
        late = await closed("/late-abort")
        assert (late.code, late.reason) == (1008, "not yours")
        assert (await denied("/refuse")).status_code == 403
        game = await closed("/game")
        assert (game.code, game.reason) == (4000, "game over")
        assert (await closed("/json", "{nope")).code == 1007
        assert (await closed("/binary", "text")).code == 1003
        slow = await closed("/slow", *["x"] * 5)
        assert slow.code == 1008 and slow.reason.startswith("inbox overflow")
        assert (await denied("/nowhere")).status_code == 404


async def test_cleanup_runs_however_the_connection_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cleanup = snippet("cleanup")
    async with TestClient(cleanup.app) as client:
        async with client.websocket("/presence/ann") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"
            assert cleanup.online == {"ann"}
        assert cleanup.online == set()
        assert cleanup.audit == ["ann left", "/presence/ann closed with 1000"]


async def test_except_star_catches_a_nursery_error() -> None:
    async with TestClient(snippet("groups").app) as client, client.websocket("/quotes") as ws:
        await ws.send_json(["ACME", "INITECH"])
        assert await ws.receive_json() == {"ACME": 12.5, "INITECH": 3.25}
        await ws.send_json(["ACME", "NOPE"])
        assert await ws.receive_json() == {"error": "unknown symbol", "symbols": ["NOPE"]}
        await ws.send_json(["INITECH"])  # still connected
        assert await ws.receive_json() == {"INITECH": 3.25}


# The guide.


async def test_handshake_subprotocols_reject_and_returned_denials() -> None:
    async with TestClient(snippet("handshake").app) as client:
        async with client.websocket("/v2/chat?name=ann", subprotocols=["chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.headers["x-chat-version"] == "2.1"
            assert await ws.receive_json() == {"hello": "ann"}
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            assert (closed.value.code, closed.value.reason) == (4000, "that was all")
        with pytest.raises(WebSocketDenied) as refused:
            async with client.websocket("/v2/chat", subprotocols=["chat.v1"]):
                pass
        assert (refused.value.status_code, refused.value.body) == (
            400,
            b"this endpoint speaks chat.v2",
        )
        with pytest.raises(WebSocketDenied) as uninvited:
            async with client.websocket("/beta?name=eve"):
                pass
        assert (uninvited.value.status_code, uninvited.value.body) == (403, b"invitation only")
        async with client.websocket("/beta?name=bob") as ws:
            assert await ws.receive() == "welcome to the beta"


async def test_websocket_hooks_and_error_handlers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chat")
    async with TestClient(snippet("hooks").app) as client:
        with pytest.raises(WebSocketDenied) as no_token:
            async with client.websocket("/rooms/lobby"):
                pass
        assert (no_token.value.status_code, no_token.value.body) == (401, b"missing or bad token")
        async with client.websocket("/rooms/lobby?token=s3cret") as ws:
            assert await ws.receive() == "welcome to lobby"
        assert "/rooms/lobby closed with 1000" in caplog.text
        with pytest.raises(WebSocketDenied) as banned:
            async with client.websocket("/rooms/staff?token=s3cret"):
                pass
        assert (banned.value.status_code, banned.value.body) == (403, b"banned from staff")
    assert "unhandled" not in caplog.text  # a handled error is not logged


async def test_http_routes() -> None:
    async with TestClient(snippet("http_app").app) as client:
        alice = await client.get("/users/1")
        assert (alice.status_code, alice.json()) == (200, {"id": 1, "name": "alice"})
        missing = await client.get("/users/9")
        assert (missing.status_code, missing.text) == (404, "no such user")
        assert (await client.get("/users/bob")).status_code == 404  # not an int: no route
        head = await client.head("/users/1")
        assert (head.status_code, head.content) == (200, b"")
        created = await client.post("/users", json={"name": "carol"})
        assert (created.status_code, created.json()) == (201, {"created": {"name": "carol"}})
        assert (await client.post("/users", content="{nope")).status_code == 400
        assert (await client.post("/users", content="x" * (64 * 1024 + 1))).status_code == 413
        not_allowed = await client.delete("/users")
        assert (not_allowed.status_code, not_allowed.headers["allow"]) == (405, "POST")


async def test_http_hooks() -> None:
    auth = {"authorization": "Bearer x"}
    async with TestClient(snippet("http_hooks").app) as client:
        anonymous = await client.get("/settings/theme")
        assert (anonymous.status_code, anonymous.text) == (401, "log in")
        assert anonymous.headers["server"] == "trioweb"  # after_request hooks see it too
        assert (await client.get("/nowhere")).status_code == 401  # hooks run before routing
        theme = await client.get("/settings/theme", headers=auth)
        assert (theme.status_code, theme.json()) == (200, {"theme": "dark"})
        missing = await client.get("/settings/font", headers=auth)
        assert (missing.status_code, missing.json()) == (404, {"missing": "font"})


async def test_lifespan_and_the_app_nursery(autojump_clock: trio.testing.MockClock) -> None:
    lifespan = snippet("lifespan_app")
    async with TestClient(lifespan.app) as client:
        assert (await client.get("/health")).json() == {"database": True, "purges": 0}
        await trio.sleep(125)
        assert (await client.get("/health")).json() == {"database": True, "purges": 2}
    assert lifespan.db.connected is False


# How-tos.


async def test_auth_decorator() -> None:
    async with TestClient(snippet("auth_token").app) as client:
        with pytest.raises(WebSocketDenied) as anonymous:
            async with client.websocket("/me"):
                pass
        assert anonymous.value.status_code == 401
        assert anonymous.value.headers["www-authenticate"] == "Bearer"
        bearer = {"authorization": "Bearer t0k-bob"}
        async with client.websocket("/me", headers=bearer) as ws:
            assert await ws.receive_json() == {"user": "bob"}
        async with client.websocket("/me?token=t0k-alice") as ws:
            assert await ws.receive_json() == {"user": "alice"}
        with pytest.raises(WebSocketDenied) as not_admin:
            async with client.websocket("/admin/users", headers=bearer):
                pass
        assert (not_admin.value.status_code, not_admin.value.body) == (
            403,
            b"bob may not do that",
        )
        async with client.websocket("/admin/users?token=t0k-alice") as ws:
            assert await ws.receive_json() == {"user": "alice", "section": "users"}
        with pytest.raises(WebSocketDenied):
            async with client.websocket("/me?token=t0k-\u00e9"):  # not ASCII: still a 401
                pass


async def test_browser_denials(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "myapp")
    browser = {"origin": "http://testserver"}
    async with TestClient(snippet("browser_denials").app) as client:
        async with client.websocket("/feed", headers=browser) as ws:
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
        assert (closed.value.code, closed.value.reason) == (4401, "log in first")
        with pytest.raises(WebSocketDenied) as denied:  # no Origin: not a browser
            async with client.websocket("/feed"):
                pass
        assert (denied.value.status_code, denied.value.body) == (401, b"log in first")
        async with client.websocket("/feed?token=t0k-alice", headers=browser) as ws:
            assert await ws.receive_json() == {"hello": "alice"}
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket("/internal?token=t0k-alice", headers=browser):
                pass
        assert denied.value.status_code == 403
    assert [r.getMessage() for r in caplog.records if r.name == "myapp"] == [
        "refused /feed with 401",
        "refused /feed with 401",
        "refused /internal with 403",
    ]


async def test_the_browser_clients_feed() -> None:
    example = snippet("client_feed")
    browser = {"origin": "http://testserver"}
    async with TestClient(example.app) as client:
        page = await client.get("/")
        assert page.content == (SNIPPETS / "client_page.html").read_bytes()
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert (await client.get("/trioweb.js")).status_code == 200
        async with client.websocket("/feed", headers=browser) as ws:
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
        assert (closed.value.code, closed.value.reason) == (4401, "log in first")

        feed = "/feed?token=let-me-in"
        async with client.websocket(feed, headers=browser) as ws:
            assert await ws.receive_json() == {
                "type": "welcome",
                "recovered": False,
                "recent": [],
            }
            await ws.send_json({"type": "ping"})
            assert await ws.receive_json() == {"type": "pong"}
            await ws.send_json({"type": "say", "text": "one"})
            assert await ws.receive_json() == {"offset": "1", "type": "said", "text": "one"}
        example.feed.publish({"type": "said", "text": "two"})  # while the page was away
        async with client.websocket(feed + "&since=1") as ws:
            assert await ws.receive_json() == {"type": "welcome", "recovered": True}
            assert await ws.receive_json() == {"offset": "2", "type": "said", "text": "two"}
        # From an offset this feed never gave, or too long ago: start over.
        for _ in range(1000):
            example.feed.publish({"type": "said", "text": "more"})
        for since in ("1003", "0", "x"):
            async with client.websocket(f"{feed}&since={since}") as ws:
                welcome = await ws.receive_json()
            assert welcome["recovered"] is False
            assert [m["offset"] for m in welcome["recent"]] == [str(n) for n in range(983, 1003)]
        async with client.websocket(feed + "&since=2") as ws:  # still kept: the oldest
            assert (await ws.receive_json())["recovered"] is True
            assert (await ws.receive_json())["offset"] == "3"


async def test_allowed_origins() -> None:
    async def opens(path: str, origin: str | None) -> bool:
        headers = {} if origin is None else {"origin": origin}
        try:
            async with client.websocket(path, headers=headers) as ws:
                await ws.receive()
        except WebSocketDenied as denied:
            assert (denied.status_code, denied.body) == (
                403,
                f"origin not allowed: {origin}".encode(),
            )
            return False
        return True

    async with TestClient(snippet("origins").app) as client:
        assert await opens("/ws", "https://chat.example.com")
        assert await opens("/ws", "https://eu.chat.example.com")
        assert await opens("/ws", None)
        assert not await opens("/ws", "https://evil.example")
        assert not await opens("/ws", "http://chat.example.com")
        assert await opens("/public", "https://evil.example")


async def test_limits(autojump_clock: trio.testing.MockClock) -> None:
    async with TestClient(snippet("limits").app, receive_timeout=600) as client:
        async with client.websocket("/chat") as ws:
            await ws.send(b"x" * (64 * 1024 + 1))
            with pytest.raises(WebSocketClosed) as too_big:
                await ws.receive()
        assert too_big.value.code == 1009
        async with client.websocket("/upload") as ws:
            await ws.send(b"x" * (1024 * 1024))
            assert await ws.receive_json() == {"received": 1024 * 1024}
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(10):
                await stack.enter_async_context(client.websocket("/upload"))
            with pytest.raises(WebSocketDenied) as full:
                await stack.enter_async_context(client.websocket("/upload"))
        assert full.value.status_code == 503
        async with client.websocket("/chat") as ws:
            start = trio.current_time()
            with pytest.raises(WebSocketClosed) as idle:
                await ws.receive()
        assert (idle.value.code, idle.value.reason) == (1000, "idle for more than 300 s")
        assert trio.current_time() - start == pytest.approx(300)


async def test_compression() -> None:
    app = snippet("compression").app

    async def negotiated(port: int, path: str) -> str | None:
        """What the server answers to a browser's permessage-deflate offer on ``path``."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                "\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some()
        assert head.startswith(b"HTTP/1.1 101")
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "sec-websocket-extensions":
                return value.strip()
        return None

    with trio.fail_after(20):
        async with helpers.serving(app) as server:
            assert await negotiated(server.port, "/prices") == (
                "permessage-deflate; client_max_window_bits=12"
            )
            assert await negotiated(server.port, "/photos") is None


async def test_broadcast_feed(autojump_clock: trio.testing.MockClock) -> None:
    async with TestClient(snippet("feed").app) as client, client.websocket("/score") as ws:
        first = (await ws.receive_json())["home"]
        for goal in range(first + 1, first + 4):
            assert await ws.receive_json() == {"home": goal, "away": 0}


async def test_auction_across_two_processes_on_redis(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rooms guide's auction in two processes (two apps on one Redis): presence, bids and
    their announcements cross over, and when the owner's process closes the room, the other
    takes over at once and closes the auction at the deadline kept in the room's state."""
    monkeypatch.setenv("AUCTION_BROKER_URL", redis_server.url)
    first, second = snippet("auction"), snippet("auction")
    for process in (first, second):
        process.BIDDING_TIME = 1.0
    with trio.fail_after(10):
        async with (
            TestClient(first.app) as one,
            TestClient(second.app) as two,
            contextlib.AsyncExitStack() as ann_here,
        ):
            ann = await ann_here.enter_async_context(one.websocket("/auction/lamp?user=ann"))
            assert (await ann.receive_json())["type"] == "state"
            assert await ann.receive_json() == {"type": "watchers", "people": 1, "tabs": 1}
            # ann's process owns the room (no event says when it got the lease: poll).
            while first.rooms.get("lamp").lease is None:  # noqa: ASYNC110
                await trio.sleep(0.01)
            async with two.websocket("/auction/lamp?user=bob") as bob:
                assert (await bob.receive_json())["type"] == "state"
                two_watchers = {"type": "watchers", "people": 2, "tabs": 2}
                assert await bob.receive_json() == two_watchers
                assert await ann.receive_json() == two_watchers
                await bob.send_json({"bid": 7})
                said = {"type": "bid", "price": 7, "bidder": "bob"}
                assert await ann.receive_json() == said
                assert await bob.receive_json() == said
                assert second.rooms.get("lamp").lease is None  # one owner
                deadline = (await second.rooms.get("lamp").state.get())["closes_at"]
                await ann_here.aclose()  # ann leaves: the room closes in her process
                assert first.rooms.get("lamp") is None
                assert await bob.receive_json() == {"type": "watchers", "people": 1, "tabs": 1}
                # The lease was released: bob's process took the room over at once, found
                # the deadline in the room's state (it did not start the clock again), and
                # closed the auction.
                assert await bob.receive_json() == {"type": "sold", "price": 7, "bidder": "bob"}
                assert second.rooms.get("lamp").lease is not None
                state = await second.rooms.get("lamp").state.get()
                assert (state["closes_at"], state["closed"]) == (deadline, True)


async def stored_message(ws: Any) -> dict[str, Any]:
    """The next message of a test socket that has an offset (presence lists have none)."""
    while "offset" not in (message := await ws.receive_json()):
        pass
    return message


async def test_resume_chat_closes_on_a_gap_and_the_client_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A gap in the live messages (as when the broker reconnects) closes the socket with 1013;
    the client comes back with its last offset and gets what it missed from the history."""
    chat = snippet("resume_chat")
    async with TestClient(chat.app) as client:
        async with client.websocket("/chat/r?name=ann") as ann:
            await ann.receive_json()
            await ann.send_json({"text": "one"})
            seen = (await stored_message(ann))["offset"]
            room = chat.rooms.get("r")
            # A gap the room could not fill from its history (it fills those it can: see
            # test_rooms_redis.py::test_stored_messages_lost_by_pubsub_come_back_from_the_history):
            # every member of the room in this process gets it.
            room._fanout.gap(room.name, "the broker reconnected")
            gone = await helpers.closed_with(ann)
            assert (gone.code, gone.reason) == (1013, "messages lost: resume")
        async with client.websocket("/chat/r?name=bob") as bob:
            await bob.receive_json()
            await bob.send_json({"text": "two"})
            await stored_message(bob)
        async with client.websocket(f"/chat/r?name=ann&since={seen}") as ann:
            assert (await ann.receive_json())["recovered"] is True
            assert (await stored_message(ann))["text"] == "two"


async def test_resume_chat_resumes_on_another_process_on_redis(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes of the resumable chat on one Redis: a client that was on one comes back
    on the other with its offset, and gets what it missed, once, then the live messages."""
    monkeypatch.setenv("CHAT_BROKER_URL", redis_server.url)
    first, second = snippet("resume_chat"), snippet("resume_chat")
    with trio.fail_after(10):
        async with TestClient(first.app) as one, TestClient(second.app) as two:
            async with one.websocket("/chat/r?name=ann") as ann:
                await ann.receive_json()
                await ann.send_json({"text": "hello"})
                seen = (await stored_message(ann))["offset"]
            async with two.websocket("/chat/r?name=bob") as bob:
                await bob.receive_json()
                await bob.send_json({"topic": "lunch"})
                await bob.send_json({"text": "anyone?"})
                await stored_message(bob)
                await stored_message(bob)
                async with two.websocket(f"/chat/r?name=ann&since={seen}") as ann:
                    welcome = await ann.receive_json()
                    assert (welcome["recovered"], welcome["topic"]) == (True, "lunch")
                    missed = [await stored_message(ann), await stored_message(ann)]
                    assert [m["type"] for m in missed] == ["topic", "message"]
                    await bob.send_json({"text": "yes"})
                    live = await stored_message(ann)
                    assert live["text"] == "yes"
                    offsets = [int(m["offset"]) for m in (*missed, live)]
                    assert int(seen) < offsets[0] < offsets[1] < offsets[2]
            async with one.websocket("/chat/r?name=cy&since=12345") as cy:
                assert (await cy.receive_json())["recovered"] is False


async def test_the_reconnecting_client_resumes_over_a_real_server() -> None:
    """resume_client.follow against the resumable chat behind trioweb.serve: it reconnects
    after a 1013 with its last offset and sees every stored message once, in order; it stops
    on a 1008 and on an HTTP 404."""
    from trio_websocket import ConnectionClosed, ConnectionRejected

    chat, follow = snippet("resume_chat"), snippet("resume_client").follow
    received: list[dict[str, Any]] = []
    arrived = trio.Event()

    async def on_message(message: dict[str, Any]) -> None:
        nonlocal arrived
        received.append(message)
        arrived.set()
        arrived = trio.Event()

    async def until(check: Any) -> None:
        while not check():
            await arrived.wait()

    def stored() -> list[str]:
        return [m["text"] for m in received if "offset" in m]

    with trio.fail_after(20):
        async with helpers.serving(chat.app) as server, trio.open_nursery() as nursery:
            url = server.url("/chat/r?name=ann")
            nursery.start_soon(partial(follow, url, on_message, base=0.01))
            await until(lambda: received)
            room = chat.rooms.get("r")
            for n in range(3):
                await room.history.append({"type": "message", "name": "bob", "text": str(n)})
            await until(lambda: len(stored()) == 3)
            room._fanout.gap(room.name, "the broker reconnected")  # (as above)
            for n in range(3, 6):  # some reach the closing socket, some the next one
                await room.history.append({"type": "message", "name": "bob", "text": str(n)})
            await until(lambda: len(stored()) == 6)
            welcomes = [m for m in received if m["type"] == "welcome"]
            assert len(welcomes) == 2 and welcomes[1]["recovered"] is True
            assert stored() == [str(n) for n in range(6)]
            nursery.cancel_scope.cancel()
            with pytest.raises(ConnectionClosed) as refused:
                await follow(server.url("/chat/" + "x" * 201), on_message)
            assert refused.value.reason.code == 1008
            with pytest.raises(ConnectionRejected) as missing:
                await follow(server.url("/nowhere"), on_message)
            assert missing.value.status_code == 404


async def test_migration_from_quart(autojump_clock: trio.testing.MockClock) -> None:
    async with TestClient(snippet("from_quart").app) as client:
        with pytest.raises(WebSocketDenied) as anonymous:
            async with client.websocket("/ws/lobby"):
                pass
        assert anonymous.value.status_code == 401
        async with client.websocket("/ws/lobby?token=s3cret") as ws:
            assert await ws.receive() == "tick in lobby"
            await ws.send("hi")
            assert await ws.receive() == "echo: hi"
            assert await ws.receive() == "tick in lobby"


# Deployment.


def unit_file() -> dict[str, str]:
    settings = {}
    for line in (SNIPPETS / "trioweb.service").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings[key.strip()] = value.strip()
    return settings


def test_the_systemd_unit_runs_trioweb_and_outlasts_its_drain() -> None:
    unit = unit_file()
    argv = shlex.split(unit["ExecStart"])
    assert Path(argv[0]).name == "trioweb"
    args = strict_parser().parse_args(argv[1:])
    assert snippet_or_module_exists(args.target.partition(":")[0])
    # A stop may take the drain (by default the graceful timeout) plus the graceful timeout.
    assert float(unit["TimeoutStopSec"]) > 2 * args.graceful_timeout
    assert unit["KillSignal"] == "SIGTERM"
    if args.workers > 1:  # one SIGTERM, relayed by trioweb's supervisor to each worker
        assert unit["KillMode"] == "mixed"


def test_the_nginx_config_fits_the_app() -> None:
    config = (SNIPPETS / "nginx.conf").read_text()
    args = strict_parser().parse_args(shlex.split(unit_file()["ExecStart"])[1:])
    assert f"server {args.host}:{args.port};" in config  # the upstream is the unit's trioweb
    for directive in [
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header Host $host;",
    ]:
        assert directive in config
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", config)[1])  # type: ignore[index]
    assert read_timeout > args.ping_interval


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    command += " -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    site = (SNIPPETS / "nginx.conf").read_text()
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", site)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/site.conf;\n}}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_serving_tls_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    import trio_websocket

    cert, key = make_certificate(tmp_path)
    port = free_port()
    for name, value in [("HOST", "127.0.0.1"), ("PORT", str(port))]:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TLS_CERTFILE", str(cert))
    monkeypatch.setenv("TLS_KEYFILE", str(key))
    context = ssl.create_default_context(cafile=str(cert))
    tls = snippet("tls")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(tls.main)  # returns once the server listens
            assert urls == [f"https://127.0.0.1:{port}"]
            url = f"wss://127.0.0.1:{port}/ws"
            async with trio_websocket.open_websocket_url(url, ssl_context=context) as ws:
                await ws.send_message("over TLS")
                assert await ws.get_message() == "over TLS"
            nursery.cancel_scope.cancel()


# References from the pages to the code.


def test_the_api_reference_has_every_public_name() -> None:
    reference = "".join(p.read_text() for p in DOCS.glob("api*.md"))
    for module in (trioweb, trioweb.testing, trioweb.broadcast, trioweb.rooms):
        for name in module.__all__:
            assert f"::: {module.__name__}.{name}\n" in reference, f"{module.__name__}.{name}"


def test_named_tests_exist() -> None:
    """Pages that name a test (reliability.md: "proved by") name tests that exist."""
    problems = []
    for page in pages():
        previous: Path | None = None
        for ref in re.findall(
            r"`((?:test_\w+\.py)(?:::\w+)?(?:\[[^\]]*\])?|\.\.\._\w+)`", page.read_text()
        ):
            if ref.startswith("..."):  # a suffix of a test of the file named just before
                suffix = ref[3:]
                if previous is None or not re.search(
                    rf"def test\w*{re.escape(suffix)}\(", previous.read_text()
                ):
                    problems.append(f"{page.name}: no test ending in {suffix} in {previous}")
                continue
            file, _, name = ref.partition("::")
            found = [d / file for d in (ROOT / "tests", SNIPPETS) if (d / file).is_file()]
            previous = found[0] if found else None
            if previous is None:
                problems.append(f"{page.name}: no {file} in tests/ or docs/snippets/")
            elif name and not re.search(
                rf"def {re.escape(name.split('[')[0])}\(", previous.read_text()
            ):
                problems.append(f"{page.name}: no test {name} in {file}")
    assert not problems, "\n".join(problems)
