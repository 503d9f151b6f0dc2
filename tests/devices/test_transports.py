"""Modbus TCP gateways, RTU through a socat pty pair, and Modbus/TCP Security with real certs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from devices import (
    DeviceProtocolError,
    DeviceUnavailable,
    ModbusRtuLink,
    ModbusTcpLink,
    ModbusTlsLink,
    SunSpecInverter,
    tls_context,
)
from hil.server import DeviceFault, SunSpecServer
from hil.sim_devices import SimInverter
from tests.devices.dev_helpers import (
    HANG_GUARD_S,
    Certs,
    PtyPair,
    SunSpecRtuServer,
    SunSpecTlsServer,
)


def _inverters(n: int) -> dict[int, SimInverter]:
    """Unit ``u`` produces ``10·u`` kW, so every answer says whose it is."""
    return {u: SimInverter(f"pv{u}", 2, 100.0, available_kw=10.0 * u) for u in range(1, n + 1)}


class _PeakLink(ModbusTcpLink):
    """A TCP link that records how many requests were on the wire at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self.peak = 0

    def _new_client(self) -> Any:
        client = super()._new_client()
        read: Callable[..., Any] = client.read_holding_registers

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                return await read(*args, **kwargs)
            finally:
                self.in_flight -= 1

        client.read_holding_registers = counted  # type: ignore[method-assign]
        return client


class _WatchedRtuLink(ModbusRtuLink):
    """An RTU link that notes every reply arriving while no request waits for it (a late
    one), with the unit that sent it: the test awaits it instead of sleeping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.late_replies: list[int] = []
        self.late_reply = asyncio.Event()

    def _new_client(self) -> Any:
        client = super()._new_client()
        ctx = client.ctx
        received: Callable[..., int] = ctx.callback_data

        def watched(data: bytes, addr: Any = None) -> int:
            waited_for = not ctx.response_future.done()
            used = received(data, addr=addr)
            if not waited_for and ctx.last_pdu is not None:
                self.late_replies.append(ctx.last_pdu.dev_id)
                self.late_reply.set()
            return used

        ctx.callback_data = watched  # type: ignore[method-assign]
        return client


async def test_devices_behind_one_gateway_share_a_bounded_link() -> None:
    sims = _inverters(6)
    async with SunSpecServer(sims) as server:
        for unit in sims:
            server.set_fault(unit, DeviceFault(delay_s=0.05))
        link = _PeakLink("127.0.0.1", server.port, connections=2, timeout_s=2.0)
        pvs = [SunSpecInverter(f"pv{u}", link, u, rating_kw=100.0, revert_s=30) for u in sims]
        try:
            readings = await asyncio.gather(*(pv.read() for pv in pvs))
            assert [r.p_kw for r in readings] == pytest.approx([10.0 * u for u in sims], abs=0.1)
            assert link.peak == 2  # bounded: never more than the gateway's connections
            assert link.stats.connects == 2
        finally:
            await link.close()


async def test_measurements_and_controls_come_in_one_request() -> None:
    async with SunSpecServer(_inverters(1)) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        pv = SunSpecInverter("pv1", link, 1, rating_kw=100.0, revert_s=30)
        try:
            await pv.read()  # discovery and the nameplate
            before = link.stats.requests
            reading = await pv.read()
            assert link.stats.requests - before == 1  # 103 and 123 are adjacent (with 120)
            assert reading.limit_enabled is False
        finally:
            await link.close()


async def test_rtu_bus_serves_several_units_one_request_at_a_time(pty_pair: PtyPair) -> None:
    sims = _inverters(3)
    server = SunSpecRtuServer(sims, tty=pty_pair.server)
    await server.start()
    link = ModbusRtuLink(pty_pair.client, baudrate=115200, timeout_s=1.0)
    pvs = {u: SunSpecInverter(f"pv{u}", link, u, rating_kw=100.0, revert_s=30) for u in sims}
    try:
        readings = await asyncio.gather(*(pv.read() for pv in pvs.values()))
        assert [r.p_kw for r in readings] == pytest.approx([10.0, 20.0, 30.0], abs=0.1)
        assert link.connections == 1
    finally:
        await link.close()
        await server.stop()


async def test_one_late_unit_does_not_close_the_serial_port(pty_pair: PtyPair) -> None:
    sims = _inverters(2)
    server = SunSpecRtuServer(sims, tty=pty_pair.server)
    await server.start()
    link = _WatchedRtuLink(pty_pair.client, baudrate=115200, timeout_s=0.3)
    pv1 = SunSpecInverter("pv1", link, 1, rating_kw=100.0, revert_s=30)
    pv2 = SunSpecInverter("pv2", link, 2, rating_kw=100.0, revert_s=30)
    try:
        await pv1.read()
        await pv2.read()
        server.set_fault(2, DeviceFault(delay_s=0.5))  # answers, but after the timeout
        with pytest.raises(DeviceUnavailable):
            await pv2.read()
        server.set_fault(2, DeviceFault())
        # was: a 0.4 s sleep. Await the late reply itself: it arrives on the open port, with
        # no request waiting for it, and is discarded
        await asyncio.wait_for(link.late_reply.wait(), HANG_GUARD_S)
        assert link.late_replies == [2]
        # the other unit on the bus still answers, on the same port, with its own values
        assert (await pv1.read()).p_kw == pytest.approx(10.0, abs=0.1)
        assert (await pv2.read()).p_kw == pytest.approx(20.0, abs=0.1)
        assert link.stats.connects == 1
    finally:
        await link.close()
        await server.stop()


def _server_ctx(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    ctx.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def test_tls_with_a_client_certificate_reads_the_device(certs: Certs) -> None:
    server = SunSpecTlsServer(_inverters(1), sslctx=_server_ctx(certs))
    await server.start()
    ctx = tls_context(
        cert_file=str(certs.client_cert), key_file=str(certs.client_key), ca_file=str(certs.ca)
    )
    link = ModbusTlsLink("127.0.0.1", server.port, sslctx=ctx, timeout_s=2.0)
    pv = SunSpecInverter("pv1", link, 1, rating_kw=100.0, revert_s=30)
    try:
        assert (await pv.read()).p_kw == pytest.approx(10.0, abs=0.1)
        assert link.label.startswith("tls://")
    finally:
        await link.close()
        await server.stop()


@pytest.mark.parametrize("wrong", ["client certificate from another CA", "untrusted server"])
async def test_tls_with_a_wrong_certificate_is_refused_quickly(certs: Certs, wrong: str) -> None:
    server = SunSpecTlsServer(_inverters(1), sslctx=_server_ctx(certs))
    await server.start()
    if wrong == "untrusted server":
        ctx = tls_context(
            cert_file=str(certs.client_cert),
            key_file=str(certs.client_key),
            ca_file=str(certs.rogue_cert),
        )
    else:
        ctx = tls_context(
            cert_file=str(certs.rogue_cert), key_file=str(certs.rogue_key), ca_file=str(certs.ca)
        )
    link = ModbusTlsLink("127.0.0.1", server.port, sslctx=ctx, timeout_s=0.5)
    pv = SunSpecInverter("pv1", link, 1, rating_kw=100.0, revert_s=30)
    try:
        # was: refused within 3 s of wall time. What that protects: the refusal costs one
        # connection attempt and at most one request, each bounded by the link's timeout
        # (the guard only keeps a hang from blocking the suite)
        with pytest.raises(DeviceUnavailable, match=r"tls://127\.0\.0\.1"):
            await asyncio.wait_for(pv.read(), HANG_GUARD_S)
        assert link.stats.connects == 1
        assert link.stats.requests <= 1
    finally:
        await link.close()
        await server.stop()


async def test_exception_responses_and_wrong_units_are_errors_not_crashes() -> None:
    async with SunSpecServer(_inverters(1)) as server:
        link = ModbusTcpLink("127.0.0.1", server.port, timeout_s=2.0)
        pv = SunSpecInverter("pv1", link, 1, rating_kw=100.0, revert_s=30)
        stranger = SunSpecInverter("pv9", link, 9, rating_kw=100.0, revert_s=30)
        try:
            await pv.read()
            with pytest.raises((DeviceProtocolError, DeviceUnavailable)):
                await stranger.read()
            server.set_fault(1, DeviceFault(exception=_illegal_address()))
            with pytest.raises(DeviceProtocolError, match="exception response"):
                await pv.read()
            assert link.stats.exceptions >= 1
            server.set_fault(1, DeviceFault(garbage=True))
            with pytest.raises(DeviceProtocolError):
                await pv.read()  # random words: the block's id/length no longer match
            server.set_fault(1, DeviceFault())
            assert (await pv.read()).p_kw == pytest.approx(10.0, abs=0.1)  # re-discovered
        finally:
            await link.close()


def _illegal_address() -> Any:
    from pymodbus.constants import ExcCodes  # noqa: PLC0415

    return ExcCodes.ILLEGAL_ADDRESS
