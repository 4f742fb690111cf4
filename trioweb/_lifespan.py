"""The app's life: the ASGI lifespan protocol, and the serving state a server watches.

:class:`Lifecycle` runs one life at a time: the extensions, the ``on_startup`` hooks and the
lifespan context manager at startup (with ``app.nursery`` open from the start), then the same in
reverse at shutdown. ``serve()`` reads its public state: whether a life is running, whether the
app is serving, what made the startup fail, and the background tasks' failures.

Two ASGI facts shape it (docs/hypercorn.md, fact 9): an app that *returns* for the lifespan scope
crashes hypercorn's trio worker, so every outcome is a message; and ``lifespan.startup.failed``
makes hypercorn raise from ``send()``, so it is sent outside every handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Protocol, TypeVar

import trio

from ._background import BackgroundFailurePolicy, BackgroundTasks, describe
from ._types import Receive, Send
from .nursery import AppNursery

__all__ = ["ALREADY_RUNNING", "Extension", "LifeMethods", "Lifecycle"]

logger = logging.getLogger("trioweb")

#: Why a second lifespan of an App that is already running fails.
ALREADY_RUNNING = (
    "this App is already running in another server or test client: an App runs in one at a "
    "time (one serve() listens on several addresses with bind=[...])"
)


class Extension(Protocol):
    """Something that runs for the app's whole life, such as a broadcast hub."""

    def lifespan(self, app: Any) -> AbstractAsyncContextManager[Any]:
        """An async context manager entered at startup and exited at shutdown."""
        ...


class Lifecycle:
    """One app's startup, serving and shutdown, one life at a time."""

    def __init__(
        self,
        background: BackgroundTasks,
        *,
        on_begin: Callable[[], None],
        on_serving: Callable[[], None],
        on_stopped: Callable[[], None],
    ) -> None:
        #: The background tasks of ``app.nursery``: their policy and failures.
        self.background = background
        #: Entered at startup, in order, and exited at shutdown in reverse.
        self.extensions: list[Extension] = []
        self.on_startup: list[Callable[[], Awaitable[Any]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[Any]]] = []
        #: The app's lifespan context manager factory, if it has one.
        self.context: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None
        #: ``app.nursery``, while a life runs.
        self.nursery: AppNursery | None = None
        #: True from a lifespan's startup to the end of its shutdown: one at a time.
        self.active = False
        #: True between a successful startup and the shutdown.
        self.serving = False
        #: What made the last startup fail, for serve() to report.
        self.startup_failure: str | None = None
        #: The error itself, with its traceback (serve() chains its StartupError to it).
        self.startup_error: Exception | None = None
        #: Log a failed startup's traceback at ERROR; serve() turns it off (to DEBUG), since
        #: it raises the error itself and ``trioweb run`` promises one line.
        self.log_startup_failure = True
        # What the app does as a life begins, starts serving, and stops serving.
        self._on_begin = on_begin
        self._on_serving = on_serving
        self._on_stopped = on_stopped

    async def run(self, app: Any, receive: Receive, send: Send) -> None:
        """The ASGI app for the lifespan scope of ``app``."""
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        if self.active:
            # A second server (or test client) running this App at the same time would share
            # its connections, its app.nursery and its extensions with the first one.
            await send({"type": "lifespan.startup.failed", "message": ALREADY_RUNNING})
            return
        self.active = True
        try:
            await self._live(app, receive, send)
        finally:
            self.active = False

    async def _live(self, app: Any, receive: Receive, send: Send) -> None:
        self._on_begin()
        self.startup_failure = None
        self.startup_error = None
        self.background.reset()
        startup_error: Exception | None = None
        failures: list[BaseException] = []
        async with trio.open_nursery() as lifespan_nursery:
            self.nursery = await lifespan_nursery.start(self.background.run)
            extensions = _ExtensionHost(self.extensions, app)
            stack = AsyncExitStack()
            try:
                try:
                    await lifespan_nursery.start(extensions.run)
                    for hook in self.on_startup:
                        await hook()
                    if self.context is not None:
                        await stack.enter_async_context(self.context(app))
                except Exception as exc:
                    level = logging.ERROR if self.log_startup_failure else logging.DEBUG
                    logger.log(level, "startup failed", exc_info=exc)
                    startup_error = self.startup_error = exc
                    self.startup_failure = describe(exc)
                else:
                    self._start_serving()
                    await send({"type": "lifespan.startup.complete"})
                    await receive()  # lifespan.shutdown
                    self._stop_serving()
                await self.background.stop()
                if startup_error is None:
                    failures = await self._shut_down(stack)
                failures.extend(await extensions.stop())
            finally:
                self.nursery = None
                self._stop_serving()
                # Cancelled from outside (serve() itself cancelled, not stopped): the context
                # managers still hold nurseries opened in this task, which must be exited here,
                # in order, and not inside a new (shielding) cancel scope. After a normal
                # shutdown both stacks are empty and this does nothing.
                await stack.aclose()
        # Sent outside every handler: hypercorn answers startup.failed by raising from send().
        if startup_error is not None:
            await send({"type": "lifespan.startup.failed", "message": describe(startup_error)})
            return
        # The background failures come first: one line for all of them (they may be many).
        problems = [describe(exc) for exc in failures]
        if (background := self.background.summary()) is not None:
            problems.insert(0, background)
        if problems:
            await send({"type": "lifespan.shutdown.failed", "message": "; ".join(problems)})
        else:
            await send({"type": "lifespan.shutdown.complete"})

    def _start_serving(self) -> None:
        self.serving = True
        self._on_serving()

    def _stop_serving(self) -> None:
        if self.serving:
            self.serving = False
            self._on_stopped()

    async def _shut_down(self, stack: AsyncExitStack) -> list[BaseException]:
        """Exit the lifespan context manager, then run the shutdown hooks; return failures."""
        failures: list[BaseException] = []
        try:
            await stack.aclose()
        except Exception as exc:
            logger.error("the lifespan context manager failed at shutdown", exc_info=exc)
            failures.append(exc)
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception as exc:
                logger.error("shutdown hook %r failed", hook, exc_info=exc)
                failures.append(exc)
        return failures


class _ExtensionHost:
    """The extensions' context managers, entered in order and exited in reverse in a task of
    their own: an extension whose own task fails while the app serves (a nursery inside its
    context manager) then ends alone, logged, instead of cancelling the lifespan under the app,
    which would skip the shutdown hooks. Its failure is reported at shutdown."""

    def __init__(self, extensions: list[Extension], app: Any) -> None:
        self._extensions = list(extensions)
        self._app = app
        self._stop = trio.Event()
        self._done = trio.Event()
        self._failures: list[BaseException] = []

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Enter every extension, report started, hold them until :meth:`stop`."""
        started = False
        try:
            async with AsyncExitStack() as stack:
                for extension in self._extensions:
                    await stack.enter_async_context(extension.lifespan(self._app))
                task_status.started()
                started = True
                await self._stop.wait()
        except Exception as exc:
            if not started:
                raise  # a startup failure: start() raises it to the lifespan
            if self._stop.is_set():
                logger.error("an extension failed at shutdown", exc_info=exc)
            else:
                logger.error("an extension failed while the app was serving", exc_info=exc)
            self._failures.append(exc)
        finally:
            self._done.set()

    async def stop(self) -> list[BaseException]:
        """Exit the extensions (if they are still in); what failed, while serving or now."""
        self._stop.set()
        await self._done.wait()
        return self._failures


E = TypeVar("E", bound=Extension)
F = TypeVar("F", bound=Callable[..., Any])


class LifeMethods:
    """The lifespan methods of :class:`~trioweb.App`: extensions, startup and shutdown hooks,
    and the app's nursery (all kept in its :class:`Lifecycle`)."""

    lifecycle: Lifecycle

    def use(self, extension: E) -> E:
        """Run ``extension.lifespan(app)`` for the app's whole life.

        Extensions start before the ``on_startup`` hooks and stop after the ``on_shutdown``
        hooks, in reverse order, so hooks can use them. Returns the extension.
        """
        if not callable(getattr(extension, "lifespan", None)):
            raise TypeError(f"{extension!r} has no lifespan(app) method: it cannot be used")
        self.lifecycle.extensions.append(extension)
        return extension

    def on_startup(self, hook: F) -> F:
        """Run ``await hook()`` at startup, before the first request (``app.nursery`` is open)."""
        self.lifecycle.on_startup.append(hook)
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Run ``await hook()`` at shutdown, after ``app.nursery``'s tasks are cancelled."""
        self.lifecycle.on_shutdown.append(hook)
        return hook

    @property
    def nursery(self) -> AppNursery:
        """A nursery that lives as long as the app, for background tasks.

        Open from the startup hooks on; cancelled at shutdown. A task that fails ends alone:
        it is logged on logger ``trioweb`` with its traceback and counted in
        :attr:`background_failures`, the other tasks go on, and later starts work. Then
        ``background_failure`` applies (see :class:`App`); either way, the shutdown reports
        the failure. See :class:`~trioweb.nursery.AppNursery`.
        """
        nursery = self.lifecycle.nursery
        if nursery is None:
            raise RuntimeError(
                "app.nursery is only open while the app runs (from the on_startup hooks on)"
            )
        return nursery

    @property
    def background_failure(self) -> BackgroundFailurePolicy:
        """What a failing task in :attr:`nursery` does to the app: ``"log"`` or ``"exit"``."""
        return self.lifecycle.background.policy

    @property
    def background_failures(self) -> int:
        """How many tasks in :attr:`nursery` have failed since the last startup (read-only).

        A task that fails before it reports itself started to ``app.nursery.start()`` is not
        counted: its error is raised to the caller of ``start()``.
        """
        return self.lifecycle.background.failures
