"""Prometheus metrics (DESIGN.md §5): prefix ``feederd_``, units in the names."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All of the daemon's metrics on their own registry (so several daemons can share a test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._servers: list[WSGIServer] = []
        r = self.registry
        self.cycle_duration = Histogram(
            "feederd_cycle_duration_seconds",
            "Duration of one control cycle.",
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.poll_duration = Histogram(
            "feederd_poll_duration_seconds",
            "Duration of the poll phase.",
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.solve_duration = Histogram(
            "feederd_solve_duration_seconds",
            "Duration of the dispatch solve.",
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.write_duration = Histogram(
            "feederd_write_duration_seconds",
            "Duration of the setpoint writes.",
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.cycles = Counter(
            "feederd_cycles", "Control cycles by outcome.", ["status"], registry=r
        )
        self.overruns = Counter(
            "feederd_cycle_overruns", "Cycles that ran past their interval.", registry=r
        )
        self.device_up = Gauge(
            "feederd_device_up",
            "1 if the device answered this interval.",
            ["device", "kind"],
            registry=r,
        )
        self.device_stale = Gauge(
            "feederd_device_stale",
            "1 if the device has missed too many intervals.",
            ["device", "kind"],
            registry=r,
        )
        self.bad_readings = Counter(
            "feederd_device_bad_readings",
            "Readings dropped as implausible or unreadable.",
            ["device"],
            registry=r,
        )
        self.write_errors = Counter(
            "feederd_device_write_errors",
            "Setpoint writes that failed or were refused.",
            ["device"],
            registry=r,
        )
        self.import_kw = Gauge(
            "feederd_feeder_import_kw",
            "Measured feeder-head import (negative = export).",
            registry=r,
        )
        self.losses_kw = Gauge(
            "feederd_losses_kw", "Network losses estimated by the dispatch.", registry=r
        )
        self.dr_import_limit_kw = Gauge(
            "feederd_dr_import_limit_kw", "Active import limit (NaN when none).", registry=r
        )
        self.dr_export_limit_kw = Gauge(
            "feederd_dr_export_limit_kw", "Active export limit (NaN when none).", registry=r
        )
        self.v_min_pu = Gauge(
            "feederd_bus_voltage_min_pu",
            "Lowest bus voltage estimated by the dispatch.",
            registry=r,
        )
        self.v_max_pu = Gauge(
            "feederd_bus_voltage_max_pu",
            "Highest bus voltage estimated by the dispatch.",
            registry=r,
        )
        self.setpoint_kw = Gauge(
            "feederd_setpoint_kw",
            "Last setpoint written per device.",
            ["device", "kind"],
            registry=r,
        )
        self.curtailed_kw = Gauge(
            "feederd_curtailed_kw", "PV power curtailed by the dispatch.", registry=r
        )
        self.limit_slack_kw = Gauge(
            "feederd_limit_slack_kw",
            "By how much the dispatch could not meet a limit.",
            ["limit"],
            registry=r,
        )
        self.voltage_slack_pu = Gauge(
            "feederd_voltage_slack_pu",
            "By how much the dispatch could not hold the voltage band (largest, p.u.).",
            registry=r,
        )
        self.rating_slack_kva = Gauge(
            "feederd_rating_slack_kva",
            "By how much the dispatch could not keep a branch inside its rating (largest).",
            registry=r,
        )
        self.solver_status = Gauge(
            "feederd_solver_status",
            "1 for the status of the last solve.",
            ["status"],
            registry=r,
        )
        self.fallbacks = Counter(
            "feederd_solver_fallbacks", "Solves replaced by the fallback rule.", registry=r
        )

        self.journal_errors = Counter(
            "feederd_journal_errors", "Interval records the journal could not write.", registry=r
        )
        # DR events and MQTT (issue 6)
        self.dr_events = Counter(
            "feederd_dr_events",
            "DR event payloads by decision (accepted, cancelled, rejected).",
            ["result"],
            registry=r,
        )
        self.dr_active_events = Gauge(
            "feederd_dr_active_events",
            "DR events active now (before overlap resolution).",
            registry=r,
        )
        self.dr_compliant = Gauge(
            "feederd_dr_compliant",
            "1 if the measured import was within the active import limit + 2%.",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "feederd_mqtt_connected", "1 while connected to the MQTT broker.", registry=r
        )
        self.mqtt_connect_failures = Counter(
            "feederd_mqtt_connect_failures",
            "Failed connection attempts to the MQTT broker, by reason (refused, tls, network).",
            ["reason"],
            registry=r,
        )
        self.mqtt_dropped = Counter(
            "feederd_mqtt_dropped_messages",
            "Outgoing MQTT messages dropped because the bounded queue was full.",
            registry=r,
        )

    def serve(
        self, host: str, port: int, *, certfile: str | None = None, keyfile: str | None = None
    ) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 picks a free port), over TLS when given a
        certificate; returns the bound port."""
        server, _thread = start_http_server(
            port, addr=host, registry=self.registry, certfile=certfile, keyfile=keyfile
        )
        self._servers.append(server)
        return int(server.server_port)

    def shutdown(self) -> None:
        while self._servers:
            server = self._servers.pop()
            server.shutdown()
            server.server_close()
