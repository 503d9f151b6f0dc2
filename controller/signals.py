"""Process signals, wired once: SIGTERM and SIGINT set ``stop``, SIGHUP sets ``reload``.

``with Signals() as signals:`` installs the handlers on the running loop and removes them on
exit; ``feederd run`` waits on both events, ``feederd demo`` on ``stop``. ``next_config`` is the
daemons' (``feederd run``, ``feederd coordinate``) wait between two generations.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

if TYPE_CHECKING:
    from controller.notify import Notifier

__all__ = ["Signals", "next_config"]

log = structlog.get_logger("feederd")
T = TypeVar("T")


class Signals:
    def __init__(self, *, reload: bool = True) -> None:
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self._wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if reload else [])

    def __enter__(self) -> Signals:
        loop = asyncio.get_running_loop()
        for sig in self._wanted:
            target = self.reload if sig is signal.SIGHUP else self.stop
            loop.add_signal_handler(sig, target.set)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._wanted:
            loop.remove_signal_handler(sig)

    async def next(self) -> str:
        """Wait for ``"stop"`` or ``"reload"`` (a reload is cleared once reported)."""
        waiters = {
            asyncio.ensure_future(self.stop.wait()): "stop",
            asyncio.ensure_future(self.reload.wait()): "reload",
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self.stop.is_set():
            return "stop"
        self.reload.clear()
        return "reload"


async def next_config(
    running: asyncio.Future[Any],
    signals: Signals,
    notifier: Notifier,
    *,
    load: Callable[[], T],
    error: type[Exception],
    current: str,
    logger: Any = log,
) -> T | None:
    """Wait for a stop (None), a reload whose config ``load`` accepts (that config), or
    ``running`` ending by itself (None: the caller raises its error). A reload ``load`` refuses
    (``error``, one line) is logged, said to systemd, and waited past: ``current`` is kept."""
    while True:
        watcher = asyncio.ensure_future(signals.next())
        waiting: set[asyncio.Future[Any]] = {running, watcher}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if running in done:
            watcher.cancel()
            return None
        if watcher.result() == "stop":
            notifier.stopping()
            logger.info("stopping", reason="signal")
            return None
        notifier.reloading()
        try:
            candidate = load()
        except error as err:
            logger.error("reload_refused", error=str(err), kept=current)
            notifier.notify("READY=1", f"STATUS=reload refused, old config kept: {err}")
            continue
        return candidate
