"""A scenario run twice, with its DR events and without them: the counterfactual M&V needs.

A baseline says what the feeder would have imported had the event not been called; the real
world never shows that, the rig can. ``run_counterfactual`` runs the same scenario (the same
seeds, days, tariff, controller and clock) once as written and once with its ``[[dr]]`` list
emptied, one after the other, each against a fresh rig and daemon (``run_scenario``), the
daemon's journal kept in a file of ``journal_dir`` for each. Until the first event is
announced the two runs are the same run; from then on the run without it is the truth a
baseline is graded against (``hil.counterfactual``), interval by interval, on the physics.

``journal_meter(path)`` reads the head import back as the daemon journaled it: what a baseline
is computed from (``optimizer.baselines``), as ``feederd report`` computes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from controller.commands.rig.config import merge
from controller.commands.rig.scenario import SimResult, run_scenario
from controller.dr.overlap import StoredEvent
from controller.journal import Journal
from hil.scenario import Scenario

__all__ = [
    "Counterfactual",
    "journal_meter",
    "journaled",
    "remove_journal",
    "run_counterfactual",
    "without_events",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Counterfactual:
    """The two runs of one scenario and what the daemon journaled in the one with the events."""

    actual: SimResult
    """The scenario as written: its events announced and held."""
    counterfactual: SimResult
    """The same scenario without its events: what the feeder would have done."""
    meter_kw: pd.Series
    """The head import (kW) the daemon journaled in ``actual``, one value per interval, by the
    interval's start (tz-aware UTC, sorted; an interval without a reading is absent)."""
    events: tuple[StoredEvent, ...]
    """The DR events the daemon journaled in ``actual`` (id, type, kW, start, end)."""
    journals: tuple[Path, Path]
    """The journal files of ``actual`` and ``counterfactual``."""

    @property
    def interval_s(self) -> float:
        return self.actual.scenario.interval_s


def without_events(scenario: Scenario) -> Scenario:
    """The same scenario with no DR event: nothing else changes (seeds, days, tariff, clock)."""
    return scenario.model_copy(update={"dr": []})


def journaled(scenario: Scenario, path: Path) -> Scenario:
    """The same scenario with the daemon's journal in ``path`` (kept after the run)."""
    controller = merge(scenario.controller, {"journal": {"path": str(path)}})
    return scenario.model_copy(update={"controller": controller})


def journal_meter(path: Path) -> tuple[pd.Series, tuple[StoredEvent, ...]]:
    """The head import the daemon journaled in ``path`` (kW, by the UTC start of the interval;
    read as ``feederd report`` reads it, ``Journal.meter``) and the events it stored."""
    journal = Journal(path)
    try:
        rows = journal.meter(datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
        events = tuple(journal.events())
    finally:
        journal.close()
    measured = [(ts, kw) for ts, kw, _ in rows if kw is not None]
    ms = np.round(np.array([ts for ts, _ in measured], dtype=float) * 1000.0).astype(np.int64)
    index = pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="start")
    series = pd.Series([kw for _, kw in measured], index=index, name="import_kw", dtype=float)
    return series[~series.index.duplicated(keep="last")].sort_index(), events


def remove_journal(path: Path) -> None:
    """Remove the journal file ``path`` and its WAL files, if there (a run starts afresh)."""
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def _fresh_journals(journal_dir: Path) -> tuple[Path, Path]:
    """The two runs' journal files in ``journal_dir``, none left from an earlier pair."""
    journal_dir.mkdir(parents=True, exist_ok=True)
    paths = (journal_dir / "actual.sqlite", journal_dir / "counterfactual.sqlite")
    for path in paths:
        remove_journal(path)
    return paths


async def run_counterfactual(
    scenario: Scenario,
    *,
    journal_dir: Path,
    base_dir: Path | None = None,
    source: str = "<scenario>",
) -> Counterfactual:
    """Run ``scenario`` with its events, then without them; see the module docstring."""
    if not scenario.dr:
        raise ValueError(f"{source}: a counterfactual needs a scenario with a [[dr]] event")
    paths = _fresh_journals(journal_dir)
    actual = await run_scenario(journaled(scenario, paths[0]), base_dir=base_dir, source=source)
    counterfactual = await run_scenario(
        journaled(without_events(scenario), paths[1]), base_dir=base_dir, source=source
    )
    meter, events = journal_meter(paths[0])
    return Counterfactual(
        actual=actual, counterfactual=counterfactual, meter_kw=meter, events=events, journals=paths
    )
