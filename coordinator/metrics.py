"""The coordinator's Prometheus metrics (prefix ``feederd_fleet_``), on their own registry so
several coordinators (and a feeder daemon) can share one test process. The daemon serves
``registry``; the core only sets values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["FEEDER_STATES", "FleetMetrics"]

FEEDER_STATES = ("up", "silent", "rejected", "short")
_ALLOCATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class FleetMetrics:
    """Every coordinator metric; ``registry`` defaults to a fresh ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.import_kw = Gauge(
            "feederd_fleet_import_kw", "Sum of the feeders' measured import.", registry=r
        )
        self.target_kw = Gauge(
            "feederd_fleet_target_kw", "Import limit of each live target.", ["target"], registry=r
        )
        self.shortfall_kw = Gauge(
            "feederd_fleet_shortfall_kw",
            "What the fleet cannot deliver of each live target.",
            ["target"],
            registry=r,
        )
        self.share_kw = Gauge(
            "feederd_fleet_share_kw", "Import limit allocated to each feeder.", ["site"], registry=r
        )
        self.feeder_import_kw = Gauge(
            "feederd_fleet_feeder_import_kw",
            "Each feeder's measured import, as last reported.",
            ["site"],
            registry=r,
        )
        self.feeder_up = Gauge(
            "feederd_fleet_feeder_up", "1 while the feeder reports, else 0.", ["site"], registry=r
        )
        self.feeders = Gauge("feederd_fleet_feeders", "Feeders by state.", ["state"], registry=r)
        self.allocation_seconds = Histogram(
            "feederd_fleet_allocation_seconds",
            "Duration of one allocation solve.",
            registry=r,
            buckets=_ALLOCATION_BUCKETS,
        )
        self.allocations = Counter(
            "feederd_fleet_allocations", "Allocations by reason.", ["reason"], registry=r
        )
        self.flex_refused = Counter(
            "feederd_fleet_flex_refused",
            "Flexibility messages refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.targets = Counter(
            "feederd_fleet_targets", "Target decisions by result.", ["result"], registry=r
        )
        self.events_published = Counter(
            "feederd_fleet_events_published",
            "DR events published to feeders, by kind (event, cancel).",
            ["kind"],
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "feederd_fleet_mqtt_connected", "1 while connected to the broker.", registry=r
        )
        for state in FEEDER_STATES:
            self.feeders.labels(state=state).set(0)
