"""`feederd demo` as a user runs it: lines per interval, a summary, exit 0; Ctrl-C is clean.

The run whose figures are checked uses ``--simulated`` (the daemon and the feeder on one
simulated clock), so what it shows never depends on how busy the machine is; the real-time
demo is checked for what a user sees of it (lines, a clean Ctrl-C).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"
LINE = re.compile(r"^t=\s*[\d.]+s\s+import\s+(-?[\d.]+) kW\s+limit\s+([\d.]+) kW")


def test_demo_holds_the_limit_and_ends_by_itself() -> None:
    proc = subprocess.run(
        [
            FEEDERD,
            "demo",
            "--simulated",
            "--duration",
            "8",
            "--interval",
            "1",
            "--import-limit-kw",
            "1900",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [m for m in map(LINE.match, proc.stdout.splitlines()) if m]
    assert len(lines) == 8, proc.stdout  # every interval, each with the head's reading
    imports = [float(m.group(1)) for m in lines]
    assert all(float(m.group(2)) == 1900 for m in lines)
    # from the second interval on, the head is under the limit, except in the one interval
    # after the demo's cloud cuts PV (the controller reacts at the next interval)
    over = [i for i, kw in enumerate(imports) if i >= 1 and kw > 1900 * 1.02]
    assert len(over) <= 1, proc.stdout
    assert all(imports[i + 1] <= 1900 * 1.02 for i in over if i + 1 < len(imports)), proc.stdout
    assert "summary" in proc.stdout
    assert "within limit +2%" in proc.stdout
    assert "(simulated time)" in proc.stdout


def test_ctrl_c_stops_the_demo_cleanly() -> None:
    proc = subprocess.Popen(
        [FEEDERD, "demo", "--duration", "60", "--interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first interval's line (the pipe's end is a hang guard)
            if LINE.match(line):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "summary" in out
