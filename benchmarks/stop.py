"""How long ``feederd run`` takes to stop on SIGTERM (the unit's promise: within 2 s).

Serves the HIL feeder's devices in a separate process (``feederd sim --serve``), runs the real
daemon against them (``feederd run``, JSON logs), waits for its third completed interval, sends
SIGTERM and times until the process has exited; ``--release`` sets ``on_stop = "release"``
(every control disabled before exiting). A stop that does not end with exit code 0 within the
hang guard is counted as failed, never as a timing. Prints one JSON object.

    .venv/bin/python benchmarks/stop.py [--runs N] [--release]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"
HANG_GUARD_S = 30.0


def _config(devices: list[dict[str, Any]], release: bool) -> str:
    lines = [
        'site = "stopbench"',
        "interval_s = 1.0",
        f'on_stop = "{"release" if release else "revert"}"',
        "[feeder]",
        'case = "builtin:case33bw"',
        "v_min_pu = 0.92",
        "[poll]",
        "timeout_s = 0.4",
        "[metrics]",
        "enabled = false",
    ]
    for d in devices:
        lines += [
            "[[devices]]",
            f'name = "{d["name"]}"',
            f'kind = "{d["kind"]}"',
            f"bus = {1 if d['kind'] == 'meter' else int(d['name'][-2:])}",
            f'transport = {{ type = "tcp", host = "{d["host"]}", port = {d["port"]}, unit = {d["unit"]} }}',
        ]
        if d["kind"] == "meter":
            lines.append("head = true")
        elif d["kind"] == "load":
            lines += [
                'register_map = "builtin:controllable_load"',
                "rating_kw = 100.0",
                "revert_s = 10",
            ]
        else:
            lines += ["rating_kw = 150.0" if d["kind"] == "pv" else "rating_kw = 250.0"]
            lines += ["revert_s = 10"]
            if d["kind"] == "battery":
                lines.append("energy_kwh = 500.0")
    return "\n".join(lines) + "\n"


def _one_stop(config: Path) -> float | None:
    """Seconds from SIGTERM to exit 0 (None: it did not stop cleanly)."""
    proc = subprocess.Popen(
        [FEEDERD, "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        cycles = 0
        for line in proc.stderr:
            if json.loads(line).get("event") == "cycle":
                cycles += 1
                if cycles == 3:
                    break
        else:
            return None
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(HANG_GUARD_S)
        return time.perf_counter() - started if code == 0 else None
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--release", action="store_true")
    args = parser.parse_args()
    rig = subprocess.Popen(
        [FEEDERD, "sim", "--serve"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    try:
        assert rig.stdout is not None
        devices = json.loads(rig.stdout.readline())["devices"]
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "feederd.toml"
            config.write_text(_config(devices, args.release), encoding="utf-8")
            stops = [_one_stop(config) for _ in range(args.runs)]
    finally:
        rig.send_signal(signal.SIGTERM)
        rig.wait(HANG_GUARD_S)
    done = [s for s in stops if s is not None]
    out: dict[str, Any] = {
        "runs": args.runs,
        "on_stop": "release" if args.release else "revert",
        "stopped": len(done),
        "failed": args.runs - len(done),
    }
    if done:
        out["stop_s_median"] = round(statistics.median(done), 3)
        out["stop_s_max"] = round(max(done), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
