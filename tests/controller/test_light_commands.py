"""Commands that need neither the solver nor the field bus do not load them: `feederd event`
and `feederd report` on an edge box start in a fraction of a second and keep working when the
solver or the Modbus stack is broken."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

HEAVY = ("pulp", "highspy", "pymodbus", "aiomqtt", "pandapower", "hil", "optimizer.dispatch")


def _loaded_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from controller.cli import main\n"
        f"code = main({argv!r})\n"
        f"print('loaded:', *sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), proc.stdout
    return set(last.split()[1:])


def test_event_commands_load_neither_the_solver_nor_the_field_bus(tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    add = [
        "event", "add", "--journal", journal, "--id", "e1", "--type", "import_limit",
        "--kw", "1500", "--end", (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    ]  # fmt: skip
    assert _loaded_after(add) == set()
    assert _loaded_after(["event", "list", "--journal", journal]) == set()
    assert _loaded_after(["event", "cancel", "--journal", journal, "--id", "e1"]) == set()


def test_check_loads_the_network_model_and_the_drivers_but_not_the_solver() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "feederd.example.toml"
    # the register maps are checked by the drivers' own code (so pymodbus comes along)
    assert _loaded_after(["check", "--config", str(example)]) <= {"pymodbus"}
