"""The DR runtime the daemon and the demo share: journal + DR service + MQTT intake, wired."""

from __future__ import annotations

import asyncio

from controller.clock import Clock
from controller.config import Config
from controller.dr.intake import MqttIntake, MqttSettings
from controller.dr.service import DrService
from controller.journal import MEMORY, Journal
from controller.metrics import Metrics

__all__ = ["DrRuntime"]


class DrRuntime:
    """Owns the journal; ``service`` goes to the ``Controller`` as ``dr=``."""

    def __init__(self, *, journal: Journal, service: DrService, intake: MqttIntake | None) -> None:
        self.journal = journal
        self.service = service
        self.intake = intake

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        clock: Clock,
        metrics: Metrics,
        mqtt: MqttSettings | None,
        journal_path: str | None = None,
    ) -> DrRuntime:
        path = journal_path or config.journal.path or MEMORY
        journal = Journal(path, retention_days=config.journal.retention_days)
        service = DrService(
            journal,
            clock=clock,
            site=config.site,
            default_import_kw=config.dr.import_limit_kw,
            default_export_kw=config.dr.export_limit_kw,
            metrics=metrics,
        )
        intake = None
        if mqtt is not None:
            intake = MqttIntake(
                mqtt,
                lambda payload: service.submit(payload, source="mqtt"),
                metrics=metrics,
                initial_status=service.status,
            )
            service.listeners.append(intake.publish_status)
            service.record_listeners.append(intake.publish_telemetry)
        return cls(journal=journal, service=service, intake=intake)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve MQTT until ``stop`` (without MQTT, just wait for it)."""
        if self.intake is not None:
            await self.intake.run(stop)
        else:
            await stop.wait()

    def close(self) -> None:
        self.journal.close()
