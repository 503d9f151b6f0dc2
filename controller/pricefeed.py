"""The price feed's intake: each ``<root>/price`` message ends in a decision, the last good feed
is kept for the horizon's prices (``controller.prices``).

Every message ends in a decision (accepted, or rejected with its reason), counted in
``feederd_price_feed_messages_total{decision}``, logged, and published retained on
``<root>/price/status`` with the feed in use; garbage never replaces the last good feed. Parsing
runs on the DR service's worker thread (``submit_async``): a flood of messages never delays an
interval. The loop asks ``feed(now)`` each interval: once every period of the feed has passed,
it is dropped and the tariff (or the default price) takes over, said once in the log and on the
status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from controller.clock import Clock
from controller.metrics import Metrics
from controller.prices import FeedRejected, PriceFeed, parse_price_feed

__all__ = ["PriceDecision", "PriceFeedService"]

log = structlog.get_logger("feederd.prices")

_RECENT = 10
_REASON_MAX = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceDecision:
    id: str | None
    result: str  # accepted | rejected
    reason: str | None = None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "result": self.result,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }


class PriceFeedService:
    """The last good price feed, and the decisions on what was sent."""

    def __init__(
        self,
        *,
        clock: Clock,
        metrics: Metrics | None = None,
        worker: concurrent.futures.Executor | None = None,
        fallback: str = "the tariff",
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self._worker = worker
        self.fallback = fallback
        """What prices the horizon when there is no feed (said in the log and the status)."""
        self.current: PriceFeed | None = None
        self.expired: PriceFeed | None = None
        self.recent: deque[PriceDecision] = deque(maxlen=_RECENT)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        """Given the status document whenever it changes (the MQTT intake publishes it)."""

    # -- intake ---------------------------------------------------------------------------

    def submit(self, payload: bytes | str) -> PriceDecision:
        """Decide on one payload in this thread; never raises."""
        now = self.clock.now()
        return self._apply(self._decide(payload, now), now)

    async def submit_async(self, payload: bytes | str) -> PriceDecision:
        """Decide on one payload on the worker thread; never raises."""
        now = self.clock.now()
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self._worker, self._decide, payload, now)
        except Exception as err:  # the executor itself failed (shut down)
            outcome = FeedRejected(f"internal error ({type(err).__name__}); not taken")
        return self._apply(outcome, now)

    def _decide(self, payload: bytes | str, now: datetime) -> PriceFeed | FeedRejected:
        try:
            return parse_price_feed(payload, now=now)
        except FeedRejected as err:
            return err
        except Exception as err:  # a bug: the sender still gets a decision, and it is said
            log.error("price_feed_failed", error=f"{type(err).__name__}: {err}")
            return FeedRejected(f"internal error ({type(err).__name__}); not taken")

    def _apply(self, outcome: PriceFeed | FeedRejected, now: datetime) -> PriceDecision:
        if isinstance(outcome, PriceFeed):
            self.current, self.expired = outcome, None
            decision = PriceDecision(id=outcome.id, result="accepted", at=now)
            log.info(
                "price_feed_accepted",
                id=outcome.id,
                import_periods=len(outcome.import_periods),
                export_periods=len(outcome.export_periods),
                until=outcome.end.isoformat(),
            )
        else:
            decision = PriceDecision(
                id=outcome.feed_id,
                result="rejected",
                reason=outcome.reason[:_REASON_MAX],
                at=now,
            )
            log.warning(
                "price_feed_rejected",
                id=decision.id,
                reason=decision.reason,
                keeping=None if self.current is None else self.current.id,
            )
        self.recent.append(decision)
        if self.metrics is not None:
            self.metrics.price_feed_messages.labels(decision.result).inc()
        self._notify()
        return decision

    # -- the loop's side ------------------------------------------------------------------

    def feed(self, now: datetime) -> PriceFeed | None:
        """The feed to price the horizon at ``now``: the last good one, until its last period
        has passed (then ``None``, said once)."""
        feed = self.current
        if feed is not None and feed.end <= now:
            log.warning(
                "price_feed_expired",
                id=feed.id,
                ended=feed.end.isoformat(),
                using=self.fallback,
                reason="every period of the last good feed has passed and no newer one came",
            )
            self.current, self.expired = None, feed
            self._notify()
            return None
        return feed

    def status(self) -> dict[str, Any]:
        """The retained ``price/status`` document."""
        state = "feed" if self.current else ("expired" if self.expired else "none")
        return {
            "at": self.clock.now().isoformat(),
            "state": state,
            "using": "the price feed" if self.current else self.fallback,
            "feed": None if self.current is None else self.current.summary(),
            "expired": None if self.expired is None else self.expired.summary(),
            "last": self.recent[-1].to_json() if self.recent else None,
            "recent": [d.to_json() for d in self.recent],
        }

    def _notify(self) -> None:
        if not self.listeners:
            return
        doc = self.status()
        for listener in self.listeners:
            listener(doc)
