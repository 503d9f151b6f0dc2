"""A period of the journal as a table and PNG plots (pandas, matplotlib).

``frame(records)`` turns interval records into a DataFrame indexed by time; ``summary(df)``
is the table an operator reads (intervals, import against the limit, compliance, losses,
curtailment, voltages, timings, the state estimate's residual, voltages and bad data);
``plots(df, out)`` writes ``import.png``, ``voltage.png`` and ``setpoints.png``.

``plan_table(plan)`` is the last plan hour by hour (``controller.plan``: import, the limit
held, state of charge, curtailment, shortfall), ``event_table(plan)`` the DR events it sees
coming and ``forecast_error_table(plan)`` the forecasts' error when it was made.

``performance_table(perf)`` is what one DR event delivered against each M&V baseline
(``controller.performance``), ``performance_intervals(perf)`` the same interval by interval and
``performance_plot(perf, path)`` draws the baselines, the measured import and the limit with the
event shaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from controller.plan import PLAN_HOURS, Plan, PlanStep
from controller.records import COMPLIANCE_TOLERANCE, within_limits

if TYPE_CHECKING:
    from controller.performance import EventPerformance

__all__ = [
    "event_table",
    "forecast_error_table",
    "frame",
    "performance_intervals",
    "performance_plot",
    "performance_table",
    "plan_table",
    "plots",
    "summary",
]


def frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    if not records:
        return pd.DataFrame()
    df = pd.DataFrame.from_records(list(records))
    df["at"] = pd.to_datetime(df["at"], utc=True, format="ISO8601")
    df = df.set_index("at").sort_index()
    setpoints = pd.DataFrame.from_records(
        [dict(r) for r in df["setpoints_kw"]], index=df.index
    ).add_prefix("sp_")
    return pd.concat([df.drop(columns=["setpoints_kw"]), setpoints], axis=1)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per measure: min, mean, max (and counts where that is what matters)."""
    rows: list[tuple[str, object]] = []
    rows.append(
        ("period", f"{df.index.min():%Y-%m-%d %H:%M:%S} .. {df.index.max():%Y-%m-%d %H:%M:%S} UTC")
    )
    rows.append(("intervals", len(df)))
    for status, n in df["status"].value_counts().items():
        rows.append((f"  status {status}", int(n)))
    limited = df.dropna(subset=["import_kw", "import_limit_kw"])
    if not limited.empty:
        within = sum(
            within_limits(float(imp), import_limit_kw=float(lim))
            for imp, lim in zip(limited["import_kw"], limited["import_limit_kw"], strict=True)
        )
        pct = f"{100 * COMPLIANCE_TOLERANCE:g}%"
        rows.append((f"within import limit +{pct}", f"{within}/{len(limited)}"))
        excess = (limited["import_kw"] - limited["import_limit_kw"]).clip(lower=0)
        rows.append(("max excess over limit, kW", round(float(excess.max()), 1)))
    for col, label in (
        ("import_kw", "head import, kW"),
        ("losses_kw", "losses, kW"),
        ("curtailed_kw", "PV curtailed, kW"),
        ("v_min_pu", "lowest voltage, p.u."),
        ("cycle_ms", "cycle, ms"),
        ("solve_ms", "solve, ms"),
    ):
        values = pd.to_numeric(df[col], errors="coerce").dropna() if col in df else None
        if values is not None and not values.empty:
            digits = 4 if col == "v_min_pu" else 1
            rows.append(
                (
                    label,
                    f"min {values.min():.{digits}f} / mean {values.mean():.{digits}f} / max {values.max():.{digits}f}",
                )
            )
    if "estimation_residual" in df:
        residual = pd.to_numeric(df["estimation_residual"], errors="coerce").dropna()
        if not residual.empty:
            rows.append(("intervals with a state estimate", f"{len(residual)}/{len(df)}"))
            rows.append(
                (
                    "estimate residual",
                    f"min {residual.min():.2f} / mean {residual.mean():.2f} / "
                    f"max {residual.max():.2f}",
                )
            )
            low = pd.to_numeric(df["estimated_v_min_pu"], errors="coerce").dropna()
            high = pd.to_numeric(df["estimated_v_max_pu"], errors="coerce").dropna()
            if not low.empty and not high.empty:
                rows.append(
                    ("estimated voltages, p.u.", f"min {low.min():.4f} / max {high.max():.4f}")
                )
            dropped: dict[str, int] = {}
            for names in df.get("estimation_dropped", []):
                for name in names or []:
                    dropped[name] = dropped.get(name, 0) + 1
            rows.append(
                (
                    "meters dropped as bad data",
                    ", ".join(f"{n} ({k} intervals)" for n, k in sorted(dropped.items())) or "none",
                )
            )
    if "dr_events" in df:
        events = sorted({e for evs in df["dr_events"] for e in (evs or [])})
        rows.append(("DR events in force", ", ".join(events) or "none"))
    return pd.DataFrame(rows, columns=["measure", "value"]).set_index("measure")


def plots(df: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(df.index, df["import_kw"], label="head import (measured)")
    ax.step(df.index, df["import_limit_kw"], where="post", label="import limit", linestyle="--")
    if "losses_kw" in df:
        ax.plot(df.index, df["losses_kw"], label="losses (dispatch)")
    ax.set_ylabel("kW")
    ax.set_title("Feeder import against the DR limit")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    save(fig, "import.png")

    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(df.index, pd.to_numeric(df["v_min_pu"], errors="coerce"), label="lowest bus voltage")
    ax.set_ylabel("p.u.")
    ax.set_title("Lowest bus voltage")
    ax.grid(alpha=0.3)
    save(fig, "voltage.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    for col in [c for c in df.columns if c.startswith("sp_")]:
        ax.plot(df.index, df[col], label=col.removeprefix("sp_"))
    ax.set_ylabel("kW")
    ax.set_title("Setpoints written")
    ax.grid(alpha=0.3)
    if any(c.startswith("sp_") for c in df.columns):
        ax.legend(loc="best", fontsize="small", ncol=4)
    save(fig, "setpoints.png")
    return written


def _overlap_s(step: PlanStep, start: datetime, end: datetime) -> float:
    return max(0.0, (min(step.end, end) - max(step.start, start)).total_seconds())


def _mean(pairs: list[tuple[float | None, float]]) -> float | None:
    """The time-weighted mean of ``(value, seconds)`` (values ``None`` left out)."""
    known = [(v, w) for v, w in pairs if v is not None and w > 0]
    total = sum(w for _, w in known)
    return None if total <= 0 else round(sum(v * w for v, w in known) / total, 1)


def plan_table(plan: Plan, hours: float = PLAN_HOURS) -> pd.DataFrame:
    """The plan hour by hour from its making: mean head import (kW), the tightest import
    limit held (kW; none: NaN), the state of charge at the hour's end (% of the batteries'
    energy), mean curtailment (kW) and the largest shortfall (kW). A row per hour the plan
    reaches, ``hours`` at most."""
    rows: list[dict[str, object]] = []
    for k in range(int(hours)):
        start = plan.at + timedelta(hours=k)
        end = start + timedelta(hours=1)
        inside = [(s, _overlap_s(s, start, end)) for s in plan.steps]
        inside = [(s, w) for s, w in inside if w > 0]
        if not inside:
            break
        limits = [s.import_limit_kw for s, _ in inside if s.import_limit_kw is not None]
        socs = [s.soc_pct for s, _ in inside if s.soc_pct is not None]
        rows.append(
            {
                "hour (UTC)": f"{start:%H:%M}",
                "import kW": _mean([(s.import_kw, w) for s, w in inside]),
                "limit kW": min(limits) if limits else None,
                "SOC %": socs[-1] if socs else None,
                "curtailed kW": _mean([(s.curtailed_kw, w) for s, w in inside]),
                "shortfall kW": max(s.shortfall_kw for s, _ in inside),
            }
        )
    return _numeric(pd.DataFrame(rows), "hour (UTC)")


def _numeric(df: pd.DataFrame, *text: str) -> pd.DataFrame:
    """Every column but ``text`` as floats (``None``: NaN, shown as ``-``)."""
    return df.astype({c: float for c in df.columns if c not in text}) if not df.empty else df


def event_table(plan: Plan) -> pd.DataFrame:
    """The DR events not yet over when the plan was made, with the shortfall it predicts
    (empty cells: the event lies beyond the plan)."""
    df = pd.DataFrame(
        [
            {
                "event": e.id,
                "start (UTC)": f"{e.start:%Y-%m-%d %H:%M}",
                "end (UTC)": f"{e.end:%Y-%m-%d %H:%M}",
                "shortfall kW": e.predicted_shortfall_kw,
                "shortfall kWh": e.predicted_shortfall_kwh,
            }
            for e in plan.events
        ]
    )
    return _numeric(df, "event", "start (UTC)", "end (UTC)")


def forecast_error_table(plan: Plan) -> pd.DataFrame:
    """The forecasts' error when the plan was made, per quantity and horizon bucket."""
    df = pd.DataFrame(
        [
            {
                "quantity": e.quantity,
                "horizon": e.bucket,
                "MAPE %": e.mape_pct,
                "RMSE kW": e.rmse_kw,
                "samples": e.samples,
            }
            for e in plan.forecast_errors
        ]
    )
    return _numeric(df, "quantity", "horizon", "samples")


# -- what a DR event delivered (M&V) -------------------------------------------------------------


def performance_table(perf: EventPerformance) -> pd.DataFrame:
    """One row per baseline: delivered and requested kWh, their ratio, the days the baseline
    averaged, its same-day adjustment and its note (None: not measurable, shown as ``-``)."""
    df = pd.DataFrame(
        [
            {
                "baseline": s.baseline,
                "delivered kWh": s.delivered_kwh,
                "requested kWh": s.requested_kwh,
                "ratio": s.performance_ratio,
                "days": len(s.days_used) if s.baseline == "10of10" else None,
                "adjustment": s.adjustment,
                "note": s.note or "",
            }
            for s in perf.summary
        ]
    )
    return _numeric(df, "baseline", "note")


def performance_intervals(perf: EventPerformance) -> pd.DataFrame:
    """The event interval by interval: measured import, the limit held and, per baseline, the
    baseline, the delivered and the requested kW (NaN: not known)."""
    df = perf.intervals.copy()
    df.index = df.index.rename("time (UTC)")
    return df


def performance_plot(perf: EventPerformance, path: Path) -> Path:
    """A PNG of the event: each baseline, the measured import and the limit held, around the
    event (the windows the baselines read), the event's span shaded."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.dates as mdates  # noqa: PLC0415
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(10, 4))
    ctx = perf.context
    span = mdates.date2num([perf.start, perf.end])  # type: ignore[no-untyped-call]
    ax.axvspan(float(span[0]), float(span[1]), color="tab:orange", alpha=0.12, label="event")
    # each value holds over its interval: drawn as steps, the last to the interval's end
    if not ctx.empty:
        t = _with_end(pd.DatetimeIndex(ctx.index), None)
        for column, style in (
            ("measured_kw", {"color": "black", "lw": 1.2, "label": "measured import"}),
            ("limit_kw", {"color": "tab:red", "ls": "--", "label": "import limit"}),
        ):
            values = ctx[column].to_numpy(dtype=float)
            ax.step(t, [*values, values[-1]], where="post", **style)
    looks = (("tab:blue", "-"), ("tab:green", "-."), ("tab:purple", ":"))
    t = _with_end(pd.DatetimeIndex(perf.intervals.index), perf.end)
    for s, (colour, ls) in zip(perf.summary, looks, strict=False):
        column = f"baseline_kw_{s.baseline}"
        if column in perf.intervals and len(perf.intervals):
            values = perf.intervals[column].to_numpy(dtype=float)
            ax.step(
                t,
                [*values, values[-1]],
                where="post",
                color=colour,
                ls=ls,
                lw=1.6,
                label=s.baseline,
            )
    event = perf.event.event
    ax.set_title(f"DR event {event.id} ({event.type.value} {event.kw:g} kW): baselines")
    ax.set_ylabel("kW")
    ax.set_xlabel("UTC")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _with_end(index: pd.DatetimeIndex, end: datetime | None) -> pd.DatetimeIndex:
    """The interval starts and where the last interval ends (``end``, else one usual step
    after it), for a step plot."""
    if len(index) == 0:
        return index
    if end is None:
        step = pd.Series(index).diff().median() if len(index) > 1 else pd.Timedelta(0)
        end = index[-1] + (step if isinstance(step, pd.Timedelta) else pd.Timedelta(0))
    return pd.DatetimeIndex(index.append(pd.DatetimeIndex([pd.Timestamp(end)])))
