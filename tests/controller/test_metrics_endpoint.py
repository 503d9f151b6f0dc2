"""The metrics endpoint under load (issue 11): 200 concurrent scrapes are all answered (a
listen backlog of 128, not socketserver's 5), over HTTP and HTTPS, and a client that never
finishes its TLS handshake holds up nobody.

Real sockets on loopback, real threads; the timeouts are hang guards, nothing is timed."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from controller.metrics import LISTEN_BACKLOG, Metrics
from tests.support.tls import Certs, make_certs

SCRAPES = 200
HANG_GUARD_S = 120.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("metrics-certs"))


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    m.cycles.labels("optimal").inc()
    try:
        yield m
    finally:
        m.shutdown()


def _scrape(url: str, start: threading.Barrier, context: ssl.SSLContext | None) -> str:
    start.wait(timeout=HANG_GUARD_S)  # every client connects at once
    with urllib.request.urlopen(url, timeout=HANG_GUARD_S, context=context) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def _scrape_all(url: str, context: ssl.SSLContext | None = None) -> list[str]:
    start = threading.Barrier(SCRAPES)
    with ThreadPoolExecutor(max_workers=SCRAPES) as pool:
        futures = [pool.submit(_scrape, url, start, context) for _ in range(SCRAPES)]
        return [f.result(timeout=HANG_GUARD_S) for f in futures]


def _backlog(port: int) -> int | None:
    """The listen backlog the kernel holds for ``port`` (``ss``: Send-Q of a listener)."""
    try:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except FileNotFoundError:
        return None
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "LISTEN":
            return int(fields[2])
    return None


def test_200_concurrent_scrapes_are_all_answered(metrics: Metrics) -> None:
    port = metrics.serve("127.0.0.1", 0)
    backlog = _backlog(port)
    assert backlog is None or backlog == LISTEN_BACKLOG == 128
    bodies = _scrape_all(f"http://127.0.0.1:{port}/metrics")
    assert len(bodies) == SCRAPES
    assert all('feederd_cycles_total{status="optimal"} 1.0' in b for b in bodies)


def test_200_concurrent_scrapes_over_https_while_a_client_stalls_its_handshake(
    metrics: Metrics, certs: Certs
) -> None:
    port = metrics.serve(
        "127.0.0.1", 0, certfile=str(certs.server_cert), keyfile=str(certs.server_key)
    )
    trusting = ssl.create_default_context(cafile=str(certs.ca))
    # connected, but never says a word: its handshake waits in its own thread
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S):
        bodies = _scrape_all(f"https://127.0.0.1:{port}/metrics", trusting)
    assert len(bodies) == SCRAPES
    assert all("feederd_cycles_total" in b for b in bodies)
    # plain HTTP on the HTTPS port gets no metrics, and the endpoint goes on serving
    with (
        pytest.raises((OSError, http.client.HTTPException)),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=HANG_GUARD_S),
    ):
        pass
    assert "feederd_cycles_total" in _scrape_all(f"https://127.0.0.1:{port}/metrics", trusting)[0]


def test_an_ipv6_address_and_shutdown(metrics: Metrics) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        port = metrics.serve("::1", 0)
    except OSError as err:
        pytest.skip(f"cannot listen on ::1: {err}")
    with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=HANG_GUARD_S) as resp:
        assert b"feederd_cycles_total" in resp.read()
    metrics.shutdown()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("::1", port), timeout=HANG_GUARD_S).close()
