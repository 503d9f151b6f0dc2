"""Process signals, wired once: SIGTERM and SIGINT set ``stop``, SIGHUP sets ``reload``.

``with Signals() as signals:`` installs the handlers on the running loop and removes them on
exit; ``feederd run`` waits on both events, ``feederd demo`` on ``stop``.
"""

from __future__ import annotations

import asyncio
import signal
from types import TracebackType

__all__ = ["Signals"]


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
