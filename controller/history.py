"""The feeder's history at slot resolution, for the forecasts: what each bus drew and each
inverter could give, averaged per slot (900 s by default).

Each interval's measurement is added to the slot it falls in; when the clock passes into a
later slot, the slot is finished: kept in memory (a ring of ``history_days`` + 1 days, one row
per slot, NaN where a series was not measured) and written to the journal's ``history`` table,
which is pruned to ``history_days`` and read back at start, so a restart keeps what was learned.
A clock that jumps forward leaves the slots it skipped absent (one log line); one that jumps
back drops the slot being averaged and starts again where it now is (one log line); a slot
measured again replaces what was kept. Nothing here raises on bad input.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
import structlog

from controller.journal import HistorySlot

__all__ = ["HistoryStore", "SlotHistory"]

log = structlog.get_logger("feederd")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PRUNE_EVERY_SLOTS = 96
"""How often (in finished slots) the journal's history is pruned to the retention."""


class HistoryStore(Protocol):
    """Where finished slots are kept (``controller.journal.Journal``)."""

    def put_history(self, slot: HistorySlot) -> None: ...

    def history_since(self, since: datetime) -> list[HistorySlot]: ...

    def prune_history(self, before: datetime) -> None: ...


class SlotHistory:
    """Slot means of each series (the buses' loads, then the inverters' PV available).

    ``values[row, series]`` holds the finished slots, row ``slot % rows`` for the absolute slot
    number ``slot = floor(UTC seconds / slot_s)``; ``slot_no[row]`` says which slot a row holds
    (-1: none), ``day[row]`` its local day (proleptic ordinal) and ``tod[row]`` its slot of the
    local day. ``version`` rises with every finished slot, so derived figures can be cached.
    """

    def __init__(
        self,
        buses: Sequence[int],
        units: Sequence[str],
        *,
        slot_s: float,
        history_days: int,
        timezone: ZoneInfo,
        store: HistoryStore | None = None,
    ) -> None:
        self.buses = tuple(buses)
        self.units = tuple(units)
        self.slot_s = float(slot_s)
        self.history_days = history_days
        self.tz = timezone
        self.store = store
        self.slots_per_day = math.ceil(86400.0 / self.slot_s)
        self.rows = (history_days + 1) * self.slots_per_day
        n = len(self.buses) + len(self.units)
        self._bus_col = {b: i for i, b in enumerate(self.buses)}
        self._unit_col = {u: len(self.buses) + i for i, u in enumerate(self.units)}
        self.values = np.full((self.rows, n), np.nan)
        self.slot_no: IntArray = np.full(self.rows, -1, dtype=np.int64)
        self.day: IntArray = np.zeros(self.rows, dtype=np.int64)
        self.tod: IntArray = np.zeros(self.rows, dtype=np.int64)
        self.version = 0
        self.latest = np.full(n, np.nan)
        """The latest measurement of each series (NaN: not measured at the latest interval)."""
        self.latest_at: datetime | None = None
        self._slot: int | None = None  # the slot being averaged
        self._sum = np.zeros(n)
        self._count = np.zeros(n)
        self._samples = 0
        self._last_ts: float | None = None
        self._last_dt: float | None = None
        self._finished = 0
        self._unknown_said: set[str] = set()
        self._store_failed = False

    @property
    def n_buses(self) -> int:
        return len(self.buses)

    # -- time ------------------------------------------------------------------------------

    def slot_of(self, at: datetime) -> int:
        return math.floor(at.timestamp() / self.slot_s)

    def cells(self, slots: IntArray) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_]]:
        """Each absolute slot's local day (ordinal), slot of the local day, and whether that
        day is a weekend day (Saturday, Sunday)."""
        utc = pd.DatetimeIndex(
            (slots.astype(np.int64) * round(self.slot_s * 1e9)).astype("datetime64[ns]")
        ).tz_localize(UTC)
        local = utc.tz_convert(self.tz)
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        tod = np.minimum(
            np.floor(np.asarray(seconds, dtype=float) / self.slot_s).astype(np.int64),
            self.slots_per_day - 1,
        )
        epoch = datetime(1970, 1, 1).toordinal()
        naive = local.tz_localize(None).normalize()
        day = (naive.asi8 // (86400 * 10**9)).astype(np.int64) + epoch
        weekend = np.asarray(local.dayofweek >= 5, dtype=bool)
        return day, tod, weekend

    # -- reading back ------------------------------------------------------------------------

    def load(self, now: datetime) -> int:
        """Read the journal's slots of the last ``history_days`` (pruning older ones); returns
        how many were kept."""
        if self.store is None:
            return 0
        since = now - timedelta(days=self.history_days)
        try:
            self.store.prune_history(since)
            slots = self.store.history_since(since)
        except sqlite3.Error as err:
            log.error("forecast_history_unreadable", error=str(err))
            return 0
        skipped = 0
        numbers: list[int] = []
        rows: list[FloatArray] = []
        for s in slots:
            if abs(s.slot_s - self.slot_s) > 1e-6:
                skipped += 1  # another slot length (the config changed): not comparable
                continue
            row = np.full(self.values.shape[1], np.nan)
            for bus, kw in s.loads_kw.items():
                col = self._bus_col.get(bus)
                if col is not None and math.isfinite(kw):
                    row[col] = kw
            for unit, kw in s.pv_kw.items():
                col = self._unit_col.get(unit)
                if col is not None and math.isfinite(kw):
                    row[col] = kw
            numbers.append(self.slot_of(s.start))
            rows.append(row)
        days, tods, _ = self.cells(np.array(numbers, dtype=np.int64))
        for i, (slot, row) in enumerate(zip(numbers, rows, strict=True)):
            self._put(slot, row, (int(days[i]), int(tods[i])))
        kept = len(numbers)
        if skipped:
            log.warning(
                "forecast_history_skipped",
                slots=skipped,
                reason=f"stored with another slot length than {self.slot_s:g} s",
            )
        log.info("forecast_history_loaded", slots=kept, days=self.history_days)
        return kept

    # -- measuring ---------------------------------------------------------------------------

    def observe(
        self, at: datetime, loads_kw: Mapping[int, float], pv_available_kw: Mapping[str, float]
    ) -> list[int]:
        """Add one interval's measurement; returns the slots it finished (normally none, or
        the one the clock just left)."""
        sample = np.full(self.values.shape[1], np.nan)
        for bus, kw in loads_kw.items():
            self._set(sample, self._bus_col.get(bus), kw, f"bus {bus}")
        for unit, kw in pv_available_kw.items():
            self._set(sample, self._unit_col.get(unit), kw, f"PV unit {unit!r}")
        ts = at.timestamp()
        slot = math.floor(ts / self.slot_s)
        finished: list[int] = []
        if self._slot is not None and slot != self._slot:
            if slot < self._slot:
                log.warning(
                    "forecast_clock_back",
                    at=at.isoformat(),
                    last=_iso(self._last_ts),
                    reason="the clock went back: the slot being averaged is dropped",
                )
                self._reset()
            else:
                finished.append(self._finish())
                self._note_gap(ts, at)
        if self._slot is None:
            self._slot = slot
        if self._last_ts is not None and ts > self._last_ts:
            self._last_dt = ts - self._last_ts
        self._last_ts = ts
        ok = ~np.isnan(sample)
        self._sum[ok] += sample[ok]
        self._count[ok] += 1.0
        self._samples += 1
        self.latest = sample
        self.latest_at = at
        return finished

    def _set(self, sample: FloatArray, col: int | None, kw: float, what: str) -> None:
        if col is None:
            if what not in self._unknown_said:
                self._unknown_said.add(what)
                log.warning("forecast_unknown_series", series=what, reason="not on the feeder")
            return
        try:
            value = float(kw)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            if what not in self._unknown_said:
                self._unknown_said.add(what)
                log.warning("forecast_bad_value", series=what, value=repr(kw))
            return
        sample[col] = value

    def _note_gap(self, ts: float, at: datetime) -> None:
        """One line when the clock jumps (or the daemon was away) over more than two slots
        and more than thrice the usual interval: the slots between stay absent."""
        last, dt = self._last_ts, self._last_dt
        if last is None:
            return
        gap = ts - last
        if gap > 2 * self.slot_s and (dt is None or gap > 3 * dt):
            log.warning(
                "forecast_history_gap",
                at=at.isoformat(),
                last=_iso(last),
                missing_slots=max(
                    0, math.floor(ts / self.slot_s) - math.floor(last / self.slot_s) - 1
                ),
            )

    def _finish(self) -> int:
        slot = self._slot
        assert slot is not None
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self._count > 0, self._sum / np.maximum(self._count, 1.0), np.nan)
        samples = self._samples
        self._reset()
        self._put(slot, mean)
        self._persist(slot, mean, samples)
        return slot

    def _reset(self) -> None:
        self._slot = None
        self._sum[:] = 0.0
        self._count[:] = 0.0
        self._samples = 0

    def _put(self, slot: int, row: FloatArray, cell: tuple[int, int] | None = None) -> None:
        r = slot % self.rows
        if self.slot_no[r] > slot:
            return  # older than what the row holds (a clock that went back a long way)
        day, tod = cell if cell is not None else self._cell(slot)
        self.values[r] = row
        self.slot_no[r] = slot
        self.day[r] = day
        self.tod[r] = tod
        self.version += 1

    def _cell(self, slot: int) -> tuple[int, int]:
        """One slot's local day (ordinal) and slot of the local day (``cells`` for one)."""
        local = datetime.fromtimestamp(slot * self.slot_s, self.tz)
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        return local.toordinal(), min(int(seconds // self.slot_s), self.slots_per_day - 1)

    def _persist(self, slot: int, mean: FloatArray, samples: int) -> None:
        if self.store is None:
            return
        start = datetime.fromtimestamp(slot * self.slot_s, UTC)
        nb = self.n_buses
        record = HistorySlot(
            start=start,
            slot_s=self.slot_s,
            samples=samples,
            loads_kw={b: float(mean[i]) for i, b in enumerate(self.buses) if not np.isnan(mean[i])},
            pv_kw={
                u: float(mean[nb + i])
                for i, u in enumerate(self.units)
                if not np.isnan(mean[nb + i])
            },
        )
        try:
            self.store.put_history(record)
            self._finished += 1
            if self._finished % PRUNE_EVERY_SLOTS == 1:
                self.store.prune_history(start - timedelta(days=self.history_days))
            if self._store_failed:
                self._store_failed = False
                log.info("forecast_history_written_again")
        except sqlite3.Error as err:
            if not self._store_failed:
                self._store_failed = True
                log.error("forecast_history_write_failed", error=str(err))

    # -- reading -----------------------------------------------------------------------------

    def at_slots(self, slots: IntArray) -> FloatArray:
        """The finished slot means for absolute slot numbers (NaN rows where none is kept)."""
        r = slots % self.rows
        held = self.slot_no[r] == slots
        return np.where(held[:, None], self.values[r], np.nan)

    def last_finished(self) -> int | None:
        """The latest finished slot kept (``None``: none yet)."""
        top = int(self.slot_no.max())
        return None if top < 0 else top


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
