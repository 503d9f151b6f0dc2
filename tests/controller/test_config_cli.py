"""`feederd check` and config errors: the installed command as a user runs it, and the same
entry point in this process for the many error cases (one line, exit 2, never a traceback)."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "feederd.example.toml"
FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"


def feederd(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, in its own process."""
    return subprocess.run([FEEDERD, *args], capture_output=True, text=True, timeout=60, check=False)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``feederd``'s entry point in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(["feederd", *args], code, out.getvalue(), err.getvalue())


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feederd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_accepted() -> None:
    proc = feederd("check", "--config", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert "33 buses, 32 branches" in proc.stdout
    assert "3715 kW" in proc.stdout
    assert "bess-bus14" in proc.stdout
    assert proc.stderr == ""


def _broken(tmp_path: Path, old: str, new: str) -> subprocess.CompletedProcess[str]:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert old in text
    return cli("check", "--config", str(write_config(tmp_path, text.replace(old, new, 1))))


_TYPE_ERR = "devices[1].transport: type must be one of tcp, tls, rtu, mqtt (got 'can')"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('site = "riverside-f3"\n', "", "site: missing required key"),
        ("interval_s = 5.0", 'interval_s = "fast"', "interval_s: Input should be a valid number"),
        (
            "bus = 18",
            "bus = 99",
            "devices[1].bus: device 'pv-bus18' is on bus 99, which the feeder does not have",
        ),
        ('case = "builtin:case33bw"', 'case = "nowhere/case99.m"', "feeder.case: MATPOWER file"),
        (
            "rating_kw = 150.0\nrevert_s = 60\n# Optional",
            "revert_s = 60\n# Optional",
            "devices[1]: a pv device needs 'rating_kw'",
        ),
        (
            "revert_s = 60\n# Optional",
            "revert_s = 6\n# Optional",
            "devices[1].revert_s: revert timeout 6 s must be at least twice",
        ),
        (
            "rating_kw = 250.0",
            "rating_kw = 250.0\ncolour = 3",
            "devices[3].colour: unknown key",
        ),
        ("interval_s = 5.0", "interval_s = nan", "interval_s: must be a finite number"),
        ('type = "tcp", host = "192.0.2.21"', 'type = "can", host = "192.0.2.21"', _TYPE_ERR),
        ('type = "tcp", host = "192.0.2.21"', 'host = "192.0.2.21"', "missing 'type'"),
        (
            'transport = { type = "tcp", host = "192.0.2.21", port = 502, unit = 1 }',
            'transport = { type = "tcp", port = 502, unit = 1 }',
            "devices[1].transport.host: missing required key",
        ),
        (
            'transport = { type = "tcp", host = "192.0.2.21", port = 502, unit = 1 }',
            'transport = { type = "tcp", host = "192.0.2.21", port = 70000, unit = 1 }',
            "devices[1].transport.port: Input should be less than or equal to 65535",
        ),
        (
            'transport = { type = "tcp", host = "192.0.2.21", port = 502, unit = 1 }',
            'unit = 1\ntransport = { type = "tcp", host = "192.0.2.21" }',
            "devices[1]: 'unit' belongs in the [devices.transport] table",
        ),
    ],
)
def test_config_errors_are_one_line_with_exit_2(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    proc = _broken(tmp_path, old, new)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(tmp_path / "feederd.toml") in lines[0]
    assert expected in lines[0]


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    proc = cli("check", "--config", str(tmp_path / "absent.toml"))
    assert proc.returncode == 2
    assert "cannot read config" in proc.stderr
    proc = cli("check", "--config", str(write_config(tmp_path, "site = [")))
    assert proc.returncode == 2
    assert "not valid TOML" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_non_radial_inline_feeder_is_refused(tmp_path: Path) -> None:
    text = """
site = "loop"
[feeder]
[[feeder.buses]]
id = 1
base_kv = 11.0
[[feeder.buses]]
id = 2
base_kv = 11.0
p_kw = 100.0
[[feeder.buses]]
id = 3
base_kv = 11.0
p_kw = 100.0
[[feeder.branches]]
from_bus = 1
to_bus = 2
r_ohm = 0.1
x_ohm = 0.1
[[feeder.branches]]
from_bus = 2
to_bus = 3
r_ohm = 0.1
x_ohm = 0.1
[[feeder.branches]]
from_bus = 3
to_bus = 1
r_ohm = 0.1
x_ohm = 0.1
[[devices]]
name = "head"
kind = "meter"
head = true
bus = 1
host = "127.0.0.1"
"""
    proc = cli("check", "--config", str(write_config(tmp_path, text)))
    assert proc.returncode == 2
    assert "feeder:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_usage_exits_2_without_traceback() -> None:
    proc = feederd("demo", "--duration", "soon")
    assert proc.returncode == 2
    assert "not a number: 'soon'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = feederd("frobnicate")
    assert proc.returncode == 2


def test_check_names_each_device_by_its_transport(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    old = 'transport = { type = "tcp", host = "192.0.2.21", port = 502, unit = 1 }'
    assert old in text
    text = text.replace(old, 'transport = { type = "rtu", serial_port = "/dev/ttyUSB0" }', 1)
    proc = cli("check", "--config", str(write_config(tmp_path, text)))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "pv-bus18" in ln)
    assert "rtu /dev/ttyUSB0 unit 1" in line
    assert "None" not in proc.stdout
    assert "tcp 192.0.2.22:502 unit 1" in proc.stdout
    assert "deprecated" not in proc.stdout


def test_the_first_formats_flat_transport_keys_still_work_with_a_note(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in (
        (
            'transport = { type = "tcp", host = "192.0.2.21", port = 502, unit = 1 }',
            'transport = "modbus-rtu"\nserial_port = "/dev/ttyUSB1"\nunit = 4',
        ),
        (
            'transport = { type = "tcp", host = "192.0.2.22", port = 502, unit = 1 }',
            'host = "192.0.2.22"\nport = 1502',
        ),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    proc = cli("check", "--config", str(write_config(tmp_path, text)))
    assert proc.returncode == 0, proc.stderr
    assert "rtu /dev/ttyUSB1 unit 4" in proc.stdout
    assert "tcp 192.0.2.22:1502 unit 1" in proc.stdout
    note = next(ln for ln in proc.stdout.splitlines() if "deprecated" in ln)
    assert note.startswith("note: devices[1], devices[2]: the flat transport keys"), note
    assert "[devices.transport]" in note


def test_hil_commands_without_pandapower_say_which_extra_to_install() -> None:
    # An edge box installs feederd without the 'hil' extra: sys.modules[...] = None makes
    # `import pandapower` fail there just as a missing package does.
    code = (
        "import sys; sys.modules['pandapower'] = None; from controller.cli import main; "
        "sys.exit(main(['demo', '--duration', '1']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "feederd[hil]" in proc.stderr
    assert "pandapower" in proc.stderr


def test_a_voltage_margin_that_leaves_no_band_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in (
        ("v_min_pu = 0.92", "v_min_pu = 0.99"),
        ("v_max_pu = 1.05", "v_max_pu = 1.02"),
        ("v_margin_pu = 0.002", "v_margin_pu = 0.02"),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    proc = cli("check", "--config", str(write_config(tmp_path, text)))
    assert proc.returncode == 2
    assert "feeder: v_margin_pu 0.02 leaves no band between v_min_pu 0.99 and v_max_pu 1.02" in (
        proc.stderr
    ), proc.stderr
