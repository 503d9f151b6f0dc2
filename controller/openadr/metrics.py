"""The OpenADR VEN's metrics (``feederd_openadr_*``), on whichever registry hosts the VEN: the
feeder daemon's (``controller.metrics.Metrics.ven``) or the fleet coordinator's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["VenMetrics"]


class VenMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.openadr_registered = Gauge(
            "feederd_openadr_registered", "1 while registered with the OpenADR VTN.", registry=r
        )
        self.openadr_vtn_up = Gauge(
            "feederd_openadr_vtn_up",
            "1 when the last exchange with the VTN succeeded (answered, verified, parsed).",
            registry=r,
        )
        self.openadr_refused = Counter(
            "feederd_openadr_refused",
            "Exchanges with the VTN that failed or whose answer was refused, by reason (tls, "
            "fingerprint, signature, unsigned, schema, http, connection, timeout, internal).",
            ["reason"],
            registry=r,
        )
        self.openadr_events = Counter(
            "feederd_openadr_events",
            "VTN events by decision (accepted, modified, cancelled, rejected).",
            ["result"],
            registry=r,
        )
        self.openadr_opts = Counter(
            "feederd_openadr_opts",
            "Opt responses sent to the VTN (optIn, optOut).",
            ["opt"],
            registry=r,
        )
        self.openadr_reports = Counter(
            "feederd_openadr_reports",
            "Reports sent to the VTN, by report (TELEMETRY_USAGE, TELEMETRY_STATUS) and result "
            "(sent, failed).",
            ["report", "result"],
            registry=r,
        )
