"""Prometheus metrics (DESIGN.md §5): prefix ``feederd_``, units in the names.

``/metrics`` is served by a thread-per-request WSGI server of our own rather than
prometheus_client's ``start_http_server``: its listen backlog is ``LISTEN_BACKLOG`` (128, not
socketserver's 5, which dropped connections under a burst of concurrent scrapes), a client
that stalls is dropped after ``REQUEST_TIMEOUT_S``, and over HTTPS the handshake runs in the
request's thread (a client that never finishes it cannot hold up the others).
"""

from __future__ import annotations

import math
import socket
import ssl
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from controller.openadr.metrics import VenMetrics

if TYPE_CHECKING:
    from controller.plan import ForecastError, Plan

__all__ = ["LISTEN_BACKLOG", "REQUEST_TIMEOUT_S", "Metrics"]

LISTEN_BACKLOG = 128
"""Connections the kernel queues for the endpoint while its thread accepts the earlier ones."""
REQUEST_TIMEOUT_S = 10.0
"""A scrape that sends nothing (or no TLS handshake) for this long is dropped."""

log = structlog.get_logger("feederd.metrics")


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S  # applied to the connection by StreamRequestHandler.setup

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus scrapes every few seconds."""


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request; the backlog above; TLS per connection, in its thread."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self, address: tuple[str, int], *, family: int, tls: ssl.SSLContext | None
    ) -> None:
        self.address_family = family  # read by TCPServer.__init__ when it makes the socket
        self.tls = tls
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(REQUEST_TIMEOUT_S)
        with self.tls.wrap_socket(request, server_side=True) as conn:  # the handshake
            super().finish_request(conn, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or failed its handshake: not worth a traceback."""
        log.debug("metrics_request_failed", client=str(client_address), exc_info=True)


_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All of the daemon's metrics on their own registry (so several daemons can share a test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._servers: list[_Server] = []
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
        self.reactive_kvar = Gauge(
            "feederd_reactive_setpoint_kvar",
            "Last fixed reactive power written per PV inverter (kvar, positive injects; NaN: "
            "the inverter has no reactive points and is dispatched on its active power alone).",
            ["device"],
            registry=r,
        )
        self.reactive_clamped = Counter(
            "feederd_reactive_clamped",
            "Reactive setpoints the safety envelope moved (to the kVA circle or the device's "
            "declared capability).",
            ["device"],
            registry=r,
        )
        self.limit_correction_kw = Gauge(
            "feederd_limit_correction_kw",
            "How far the head meter's feedback tightened a limit for the dispatch (kW; "
            "negative loosens, at most by the margin; NaN: no such limit).",
            ["limit"],
            registry=r,
        )
        self.slack_voltage_pu = Gauge(
            "feederd_slack_bus_voltage_pu",
            "The slack (substation) bus's voltage the dispatch used, p.u.",
            registry=r,
        )
        self.slack_voltage_measured = Gauge(
            "feederd_slack_bus_voltage_measured",
            "1 if the slack bus's voltage came from the head meter this interval, 0 if it was "
            "the configured (or the case's) value.",
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

        self.refused_messages = Counter(
            "feederd_device_refused_messages",
            "Telemetry messages a device refused, by reason (garbage, too_old, future).",
            ["device", "reason"],
            registry=r,
        )
        # state estimation (issue 13)
        self.estimation_residual = Gauge(
            "feederd_estimation_residual",
            "The state estimate's weighted residual (NaN: no estimate this interval).",
            registry=r,
        )
        self.estimation_v_sigma_max_pu = Gauge(
            "feederd_estimation_v_sigma_max_pu",
            "The largest standard deviation of an estimated bus voltage, p.u.",
            registry=r,
        )
        self.estimation_v_min_pu = Gauge(
            "feederd_estimation_v_min_pu", "Lowest estimated bus voltage, p.u.", registry=r
        )
        self.estimation_v_max_pu = Gauge(
            "feederd_estimation_v_max_pu", "Highest estimated bus voltage, p.u.", registry=r
        )
        self.estimation_measurements = Gauge(
            "feederd_estimation_measurements",
            "Measurements the state estimate used (pseudo-measurements not counted).",
            registry=r,
        )
        self.estimation_meters = Gauge(
            "feederd_estimation_meters",
            "Meters along the feeder by state: fresh (a reading this interval) or stale.",
            ["state"],
            registry=r,
        )
        self.estimation_bad_data = Counter(
            "feederd_estimation_bad_data",
            "Intervals in which a meter's measurement was dropped as bad data.",
            ["device"],
            registry=r,
        )
        self.estimation_failures = Counter(
            "feederd_estimation_failures",
            "Intervals whose state estimate failed (the head-scaled loads were used).",
            registry=r,
        )

        for no_estimate in (
            self.estimation_residual,
            self.estimation_v_sigma_max_pu,
            self.estimation_v_min_pu,
            self.estimation_v_max_pu,
        ):
            no_estimate.set(math.nan)  # until an interval makes one (none without meters)

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
        self.dr_predicted_shortfall_kw = Gauge(
            "feederd_dr_predicted_shortfall_kw",
            "How far the plan predicts an accepted DR event's limit will be missed (kW, the "
            "largest over its steps; 0: ready). The label goes when the event is over.",
            ["event"],
            registry=r,
        )
        # M&V: what the last DR events delivered, per baseline (issue 16; the last
        # controller.assessor.SHOWN events assessed, older labels removed)
        self.dr_delivered_kwh = Gauge(
            "feederd_dr_delivered_kwh",
            "Energy a DR event delivered: its baseline less the measured import, summed over "
            "the event (kWh; NaN: not measurable).",
            ["event", "baseline"],
            registry=r,
        )
        self.dr_requested_kwh = Gauge(
            "feederd_dr_requested_kwh",
            "Energy a DR event asked for against the baseline: reduce_by its kW, import_limit "
            "the baseline above the limit, summed over the event (kWh; NaN: not measurable).",
            ["event", "baseline"],
            registry=r,
        )
        self.dr_performance_ratio = Gauge(
            "feederd_dr_performance_ratio",
            "Delivered over requested energy of a DR event against the baseline (1: as asked; "
            "NaN: nothing requested or measurable).",
            ["event", "baseline"],
            registry=r,
        )
        self.price_feed_messages = Counter(
            "feederd_price_feed_messages",
            "Price-feed messages by decision (accepted, rejected).",
            ["decision"],
            registry=r,
        )
        # the OpenADR VEN (issue 16): its own class, also on the fleet coordinator's registry
        self.ven = VenMetrics(r)
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
            "MQTT messages dropped because a bounded queue was full, by direction (in: not"
            " acknowledged, redelivered after a reconnect; out: telemetry, oldest first).",
            ["direction"],
            registry=r,
        )

        # the plan and the forecasts' error (issue 15)
        self.plan_import_kw = Gauge(
            "feederd_plan_import_kw",
            "Head import the last plan holds at minutes_ahead from its making (kW; NaN: no "
            "plan, or it does not reach that far).",
            ["minutes_ahead"],
            registry=r,
        )
        self.plan_soc_pct = Gauge(
            "feederd_plan_soc_pct",
            "The batteries' state of charge the last plan holds at minutes_ahead (% of their "
            "total energy; NaN: no plan or no battery).",
            ["minutes_ahead"],
            registry=r,
        )
        self.plan_curtailed_kw = Gauge(
            "feederd_plan_curtailed_kw",
            "PV curtailment the last plan holds at minutes_ahead (kW; NaN: no plan).",
            ["minutes_ahead"],
            registry=r,
        )
        self.forecast_mape_pct = Gauge(
            "feederd_forecast_mape_pct",
            "Mean absolute percentage error of the forecasts against what was measured, by "
            "quantity (load, pv) and horizon bucket (NaN: nothing to judge yet).",
            ["quantity", "bucket"],
            registry=r,
        )
        self.forecast_rmse_kw = Gauge(
            "feederd_forecast_rmse_kw",
            "Root mean square error of the forecasts against what was measured (kW), by "
            "quantity and horizon bucket (NaN: nothing to judge yet).",
            ["quantity", "bucket"],
            registry=r,
        )
        self.show_plan(None)  # every moment of the next hour is there, NaN until a plan

        # the flexibility published on <root>/flex (issue 17, controller.flex_outlet)
        self.flex_min_kw = Gauge(
            "feederd_flex_min_kw",
            "The lowest import limit the feeder can hold over the next window, as last "
            "computed (kW; NaN: not computed this interval).",
            registry=r,
        )
        self.flex_max_kw = Gauge(
            "feederd_flex_max_kw",
            "The peak import the feeder plans over the next window without the fleet "
            "coordinator's events, as last computed (kW; NaN: not computed this interval).",
            registry=r,
        )
        self.flex_duration = Histogram(
            "feederd_flex_duration_seconds",
            "Duration of one interval's flexibility solves.",
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.flex_solves = Counter(
            "feederd_flex_solves",
            "Parametric solves of the kept LP made for the flexibility.",
            registry=r,
        )
        self.flex_missed = Counter(
            "feederd_flex_missed",
            "Intervals whose flexibility was not computed, or only in part, by reason "
            "(not_dispatched, busy, late, budget, failed).",
            ["reason"],
            registry=r,
        )
        self.flex_min_kw.set(math.nan)
        self.flex_max_kw.set(math.nan)

    def show_plan(self, plan: Plan | None) -> None:
        """The plan's next hour: each ``MINUTES_AHEAD`` moment's step (NaN where none)."""
        from controller.plan import MINUTES_AHEAD  # noqa: PLC0415

        for minutes in MINUTES_AHEAD:
            step = None if plan is None else plan.ahead(minutes)
            label = str(minutes)
            for gauge, value in (
                (self.plan_import_kw, None if step is None else step.import_kw),
                (self.plan_soc_pct, None if step is None else step.soc_pct),
                (self.plan_curtailed_kw, None if step is None else step.curtailed_kw),
            ):
                gauge.labels(label).set(math.nan if value is None else value)

    def show_forecast_errors(self, errors: Iterable[ForecastError]) -> None:
        """The forecasts' error per quantity and horizon bucket (NaN: not judged yet)."""
        for e in errors:
            mape = math.nan if e.mape_pct is None else e.mape_pct
            rmse = math.nan if e.rmse_kw is None else e.rmse_kw
            self.forecast_mape_pct.labels(e.quantity, e.bucket).set(mape)
            self.forecast_rmse_kw.labels(e.quantity, e.bucket).set(rmse)

    def serve(
        self, host: str, port: int, *, certfile: str | None = None, keyfile: str | None = None
    ) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 picks a free port), over TLS when given a
        certificate; returns the bound port."""
        tls: ssl.SSLContext | None = None
        if certfile and keyfile:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            tls.load_cert_chain(certfile, keyfile)
        # the family of the address (an IPv6 one needs AF_INET6), as http.server does
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        server = _Server((str(sockaddr[0]), port), family=family, tls=tls)
        server.set_app(make_wsgi_app(self.registry))
        thread = threading.Thread(
            target=server.serve_forever, name=f"feederd-metrics-{port}", daemon=True
        )
        thread.start()
        self._servers.append(server)
        return int(server.server_port)

    def shutdown(self) -> None:
        while self._servers:
            server = self._servers.pop()
            server.shutdown()
            server.server_close()
