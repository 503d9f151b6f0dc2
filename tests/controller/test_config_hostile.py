"""Hostile configs (issue 11): every number has a range, every file a kind and a size, every
decoding and nesting error is one line. ``feederd check`` and ``feederd run`` refuse each one
with the same line and exit 2, never a traceback; what ``check`` accepts, ``run`` accepts."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.commands.run import _settings
from controller.config import (
    CASE_MAX_BYTES,
    CONFIG_MAX_BYTES,
    SECRET_MAX_BYTES,
    ConfigError,
    load_config,
)
from controller.dr.connect import mqtt_settings
from tests.controller.config_fuzz import to_toml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "feederd.example.toml"
FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def example(tmp_path: Path) -> dict[str, Any]:
    doc = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    doc["journal"]["path"] = str(tmp_path / "journal.sqlite")
    return doc


def write(tmp_path: Path, doc: dict[str, Any] | bytes | str, name: str = "feederd.toml") -> Path:
    path = tmp_path / name
    if isinstance(doc, dict):
        doc = to_toml(doc)
    path.write_bytes(doc if isinstance(doc, bytes) else doc.encode("utf-8"))
    return path


def refused_by_both(path: Path) -> str:
    """``check`` and ``run`` (both in this process) refuse ``path`` with the same single line
    and exit 2; returns the line."""
    code, out, err = cli("check", "--config", str(path))
    assert code == 2, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"feederd: {path}: "), err
    assert "Traceback" not in err
    run_code, run_out, run_err = cli("run", "--config", str(path))
    assert (run_code, run_out, run_err) == (2, "", err)
    with pytest.raises(ConfigError) as info:  # the SIGHUP reload's validation
        load_config(path, require_credentials=True)
    assert f"feederd: {info.value}\n" == err
    return lines[0]


def accepted_by_both(path: Path) -> None:
    code, _out, err = cli("check", "--config", str(path))
    assert code == 0, err
    assert err == ""
    loaded = load_config(path, require_credentials=True)
    _settings(loaded)


def _set(doc: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node: Any = doc
    for part in parents:
        if part.endswith("]"):
            name, index = part[:-1].split("[")
            node = node[name][int(index)]
        else:
            node = node.setdefault(part, {})
    node[last] = value


# -- every number, duration and count has a range --------------------------------------------

# (key, out-of-range values); each is also refused as NaN and infinity. devices[1] is a PV,
# devices[3] a battery, devices[4] a load, devices[0] the head meter.
RANGES: list[tuple[str, tuple[Any, ...]]] = [
    ("interval_s", (0.1, 3601)),
    ("release_timeout_s", (0, 11)),
    ("feeder.rating_kw", (0, 1e6 + 1)),
    ("feeder.v_min_pu", (0.5, 1.0)),
    ("feeder.v_max_pu", (1.0, 1.5)),
    ("feeder.v_margin_pu", (-0.001, 0.03)),
    ("dr.import_limit_kw", (-1e6 - 1, 1e6 + 1)),
    ("dr.export_limit_kw", (-1, 1e6 + 1)),
    ("dr.price_per_kwh", (-1000.5, 1000.5)),
    ("dr.max_event_kw_factor", (0, 101)),
    ("dr.horizon_days", (0, 367)),
    ("dr.max_events", (0, 100_001)),
    ("poll.timeout_s", (0, -1, 601, 1e308)),
    ("poll.deadline_fraction", (0, 0.81)),
    ("poll.stale_after_intervals", (0, 1001)),
    ("mqtt.port", (0, 65536)),
    ("mqtt.keepalive_s", (4, 3601)),
    ("mqtt.queue_size", (0, 10_001)),
    ("metrics.port", (-1, 65536)),
    ("journal.retention_days", (0, 3651, 999_999_999_999)),
    ("devices[1].bus", (-1, 2**31, 10**4000)),
    ("devices[1].rating_kw", (0, 0.001, 1e6 + 1)),
    ("devices[1].revert_s", (0, 65535)),
    ("devices[1].revert_limit_pct", (0, 100.5)),
    ("devices[1].ramp_kw_per_s", (0, 1e6 + 1)),
    ("devices[1].transport.port", (0, 65536)),
    ("devices[1].transport.unit", (-1, 256)),
    ("devices[1].transport.connections", (0, 17)),
    ("devices[3].energy_kwh", (0, 1e7 + 1)),
    ("devices[4].min_kw", (-1, 1e6 + 1)),
    ("devices[4].shed_cost_per_kwh", (-1, 1000.5)),
]
CASES = [
    pytest.param(
        key, value, id=f"{key}={value if not isinstance(value, int) or value < 1e30 else 'huge'}"
    )
    for key, values in RANGES
    for value in (*values, float("nan"), float("inf"), float("-inf"))
]


@pytest.mark.parametrize(("key", "value"), CASES)
def test_a_number_out_of_its_range_is_refused_by_check_and_run(
    tmp_path: Path, key: str, value: Any
) -> None:
    doc = example(tmp_path)
    _set(doc, key, value)
    line = refused_by_both(write(tmp_path, doc))
    assert f": {key}: " in line, line


INLINE_FEEDER = {
    "slack_bus": 1,
    "base_mva": 10.0,
    "buses": [
        {"id": 1, "base_kv": 12.66},
        {"id": 2, "base_kv": 12.66, "p_kw": 100.0, "q_kvar": 60.0},
    ],
    "branches": [
        {"from_bus": 1, "to_bus": 2, "r_ohm": 0.0922, "x_ohm": 0.047, "rating_kva": 5000.0}
    ],
}


def _inline(tmp_path: Path) -> dict[str, Any]:
    doc = example(tmp_path)
    doc["feeder"] = {**copy.deepcopy(INLINE_FEEDER), "v_min_pu": 0.92}
    doc["devices"] = [doc["devices"][0], {**doc["devices"][1], "bus": 2}]
    return doc


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("feeder.base_mva", 0),
        ("feeder.base_mva", 1e5),
        ("feeder.slack_bus", 2**31),
        ("feeder.buses[1].p_kw", 1e6 + 1),
        ("feeder.buses[1].q_kvar", -1e6 - 1),
        ("feeder.buses[1].base_kv", 0),
        ("feeder.buses[1].base_kv", 1e-300),
        ("feeder.buses[1].base_kv", 1001),
        ("feeder.buses[1].v_min_pu", 0),
        ("feeder.buses[1].v_max_pu", 2.5),
        ("feeder.branches[0].r_ohm", -1),
        ("feeder.branches[0].x_ohm", 1e5),
        ("feeder.branches[0].rating_kva", 0),
        ("feeder.branches[0].rating_kva", 1e6 + 1),
        ("feeder.buses[1].p_kw", float("nan")),
    ],
)
def test_an_inline_feeder_has_ranges_too(tmp_path: Path, key: str, value: Any) -> None:
    accepted_by_both(write(tmp_path, _inline(tmp_path)))
    doc = _inline(tmp_path)
    _set(doc, key, value)
    line = refused_by_both(write(tmp_path, doc))
    assert f": {key}: " in line, line


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_age_s", 0),
        ("max_age_s", 86401),
        ("max_age_s", float("nan")),
        ("scale", {"p_kw": 0}),
        ("scale", {"p_kw": 1e7}),
        ("scale", {"p_kw": float("inf")}),
        ("paths", {"p_kw": "a\nb"}),
        ("paths", {"p kw": "ac.p_w"}),
        ("telemetry_topic", "a/#"),
        ("telemetry_topic", "a\x00b"),
        ("status_topic", "a\nb"),
        ("host", "a..b"),
        ("host", "a" * 64 + ".example"),
        ("host", "ü.example"),
        ("host", "1.2.3.4 "),
    ],
)
def test_an_mqtt_device_has_ranges(tmp_path: Path, key: str, value: Any) -> None:
    doc = example(tmp_path)
    doc["devices"][2]["transport"] = {
        "type": "mqtt",
        "host": "192.0.2.50",
        "telemetry_topic": "site/pv33/state",
        "paths": {"p_kw": "ac.p_w"},
        "scale": {"p_kw": 0.001},
        "setpoint_topic": "site/pv33/set",
    }
    accepted_by_both(write(tmp_path, doc))
    doc["devices"][2]["transport"][key] = value
    line = refused_by_both(write(tmp_path, doc))
    assert ": devices[2].transport." in line, line


def test_the_poll_timeout_must_fit_inside_the_poll_deadline(tmp_path: Path) -> None:
    doc = example(tmp_path)  # interval 5 s x deadline_fraction 0.4: a deadline of 2 s
    doc["poll"]["timeout_s"] = 2.0
    accepted_by_both(write(tmp_path, doc))
    doc["poll"]["timeout_s"] = 2.01
    line = refused_by_both(write(tmp_path, doc))
    assert "poll.timeout_s: a request timeout of 2.01 s does not fit inside the poll deadline" in (
        line
    )
    assert "(interval_s 5 x deadline_fraction 0.4)" in line
    doc["poll"]["deadline_fraction"] = 0.8  # a deadline of 4 s
    accepted_by_both(write(tmp_path, doc))


def test_the_largest_values_in_range_are_accepted_and_run(tmp_path: Path) -> None:
    """The bounds are not off by one: at each edge, check and run accept."""
    doc = example(tmp_path)
    for key, value in (
        ("journal.retention_days", 3650),
        ("dr.import_limit_kw", 1e6),
        ("dr.price_per_kwh", -1000.0),
        ("dr.horizon_days", 366),
        ("dr.max_events", 100_000),
        ("devices[1].rating_kw", 1e6),
        ("devices[1].rating_kva", 1e6),
        ("devices[1].ramp_kw_per_s", 1e6),
        ("control.reactive_cost_per_kvarh", 1000.0),
        ("devices[3].energy_kwh", 1e7),
        ("devices[4].shed_cost_per_kwh", 1000.0),
        ("poll.stale_after_intervals", 1000),
        ("mqtt.queue_size", 10_000),
    ):
        _set(doc, key, value)
    accepted_by_both(write(tmp_path, doc))


# -- files: regular, and bounded ------------------------------------------------------------


@pytest.fixture
def odd_files(tmp_path: Path) -> dict[str, Path]:
    """A folder, a FIFO, a device, and regular files over each limit (sparse: no disk used)."""
    files = {"folder": tmp_path / "folder", "fifo": tmp_path / "fifo", "device": Path("/dev/zero")}
    files["folder"].mkdir()
    os.mkfifo(files["fifo"])
    for name, size in (
        ("over-1MiB", CONFIG_MAX_BYTES + 1),
        ("over-64KiB", SECRET_MAX_BYTES + 1),
        ("over-50MiB", CASE_MAX_BYTES + 1),
    ):
        path = tmp_path / name
        with path.open("wb") as f:
            f.truncate(size)
        files[name] = path
    return files


def test_the_config_itself_is_a_regular_file_of_at_most_1_mib(
    tmp_path: Path, odd_files: dict[str, Path]
) -> None:
    for kind, expected in (
        ("folder", "is a directory, not a regular file"),
        ("device", "is a device, not a regular file"),
        ("over-1MiB", "bytes, more than the 1 MiB allowed"),
    ):
        path = odd_files[kind]
        for command in ("check", "run"):
            code, out, err = cli(command, "--config", str(path))
            assert code == 2, (command, kind)
            assert out == ""
            assert err.startswith(f"feederd: {path}: cannot read config: ")
            assert expected in err
            assert len(err.splitlines()) == 1


@pytest.mark.integration
def test_a_fifo_is_refused_without_waiting_for_a_writer(odd_files: dict[str, Path]) -> None:
    """The installed command, in its own process (a hang guard: a FIFO opened for reading
    would wait for a writer forever)."""
    for command in ("check", "run"):
        proc = subprocess.run(
            [FEEDERD, command, "--config", str(odd_files["fifo"])],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().endswith("is a FIFO, not a regular file"), proc.stderr
        assert len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "over-1MiB"])
def test_a_register_map_is_a_regular_file_of_at_most_1_mib(
    tmp_path: Path, odd_files: dict[str, Path], kind: str
) -> None:
    doc = example(tmp_path)
    doc["devices"][4]["register_map"] = str(odd_files[kind])
    line = refused_by_both(write(tmp_path, doc))
    assert "devices[4].register_map: " in line
    assert ("MiB allowed" if kind.startswith("over") else "not a regular file") in line


@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "over-50MiB"])
def test_a_matpower_case_is_a_regular_file_of_at_most_50_mib(
    tmp_path: Path, odd_files: dict[str, Path], kind: str
) -> None:
    doc = example(tmp_path)
    doc["feeder"]["case"] = str(odd_files[kind])
    line = refused_by_both(write(tmp_path, doc))
    assert "feeder.case: " in line
    assert ("MiB allowed" if kind.startswith("over") else "not a regular file") in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("function mpc = x\nmpc.baseMVA = 10;\nmpc.bus = [\n"
         "\t1 3 0 0 0 0 1 1 0 12.66 1 1.1 0.9;\n\tnan 1 0 0 0 0 1 1 0 12.66 1 1.1 0.9;\n];\n"
         "mpc.branch = [\n\t1 2 0.1 0.1 0 0 0 0 0 0 1 -360 360;\n];\n", "MATPOWER case: "),
        ("not a case at all \xff", "cannot read MATPOWER case"),
        ("", "cannot read MATPOWER case"),
    ],
)  # fmt: skip
def test_a_broken_matpower_case_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "broken.m").write_text(text, encoding="latin-1")
    doc = example(tmp_path)
    doc["feeder"]["case"] = "broken.m"  # next to the config
    line = refused_by_both(write(tmp_path, doc))
    assert "feeder.case: " in line
    assert expected in line


@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "over-64KiB"])
def test_secrets_and_certificates_are_regular_files_of_at_most_64_kib(
    tmp_path: Path, odd_files: dict[str, Path], kind: str
) -> None:
    path = str(odd_files[kind])
    expected = "KiB allowed" if kind.startswith("over") else "not a regular file"
    for key, value in (
        ("mqtt", {"enabled": True, "username": "feederd", "password_file": path}),
        ("mqtt", {"enabled": True, "tls": {"ca_file": path}}),
        ("metrics", {"tls_cert_file": path, "tls_key_file": path}),
    ):
        doc = example(tmp_path)
        doc[key] = value
        line = refused_by_both(write(tmp_path, doc))
        assert f": {key}." in line
        assert expected in line, line
    doc = example(tmp_path)
    doc["devices"][1]["transport"] = {
        "type": "tls",
        "host": "192.0.2.21",
        "cert_file": path,
        "key_file": path,
    }
    line = refused_by_both(write(tmp_path, doc))
    assert ": devices[1].transport.cert_file: " in line
    assert expected in line


def test_a_password_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"\xff\xfe\x00secret")
    doc = example(tmp_path)
    doc["mqtt"] = {"enabled": True, "username": "feederd", "password_file": "pw"}
    line = refused_by_both(write(tmp_path, doc))
    assert "mqtt.password_file: " in line
    assert "not valid UTF-8 (byte 0)" in line


def test_a_relative_secret_starts_next_to_the_config_whatever_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``check`` run by an operator in /etc/feederd and ``run`` started by systemd in / read
    the same file."""
    (tmp_path / "pw").write_text("s3cret\n")
    doc = example(tmp_path)
    doc["mqtt"] = {"enabled": True, "username": "feederd", "password_file": "pw"}
    path = write(tmp_path, doc)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    accepted_by_both(path)
    loaded = load_config(path, require_credentials=True)
    assert mqtt_settings(loaded.config, source="x", base_dir=loaded.base_dir).password == "s3cret"


def test_the_journal_path_is_a_journal_or_can_be_made(tmp_path: Path) -> None:
    doc = example(tmp_path)
    (tmp_path / "notes.txt").write_text("not a database\n")
    for value, expected in (
        (str(tmp_path), "is a directory, not a regular file"),
        ("/dev/null", "is a device, not a regular file"),
        (str(tmp_path / "notes.txt"), "is not a journal (not an SQLite database file)"),
        (str(tmp_path / "notes.txt" / "j.sqlite"), "is not a folder"),
    ):
        doc["journal"]["path"] = value
        line = refused_by_both(write(tmp_path, doc))
        assert "journal.path: " in line
        assert expected in line, line
    doc["journal"]["path"] = str(tmp_path / "new" / "folder" / "journal.sqlite")
    accepted_by_both(write(tmp_path, doc))
    assert not (tmp_path / "new").exists()  # check creates nothing


# -- decoding and nesting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'site = "\xff"\n', "not valid UTF-8 (byte 8)"),
        (b'site = "a\x00b"\n', "not valid TOML"),
        (b"x = " + b"[" * 2000 + b"]" * 2000 + b"\n", "nested too deeply"),
        (b"x = " + b"{a = " * 2000 + b"1" + b"}" * 2000 + b"\n", "nested too deeply"),
        (b"x = " + b"9" * 5000 + b"\n", "Exceeds the limit (4300 digits)"),
        (b"x" + b".x" * 100_000 + b" = 1\n", "a dotted key of more than 32 parts (line 1)"),
        (b"[" + b"x." * 40 + b"x]\n", "a dotted key of more than 32 parts"),
        (b'"a\\"b"' + b'."a\\"b"' * 40 + b" = 1\n", "a dotted key of more than 32 parts"),
    ],
)
def test_decoding_and_nesting_errors_are_one_line(
    tmp_path: Path, text: bytes, expected: str
) -> None:
    line = refused_by_both(write(tmp_path, text))
    assert ": cannot read config: " in line
    assert expected in line, line


def test_a_string_value_full_of_dots_is_not_a_dotted_key(tmp_path: Path) -> None:
    doc = example(tmp_path)
    doc["mqtt"]["topic_root"] = "a." * 60 + "b"
    accepted_by_both(write(tmp_path, doc))


@pytest.mark.parametrize(
    "key",
    [
        "devices[4].register_map",
        "feeder.case",
        "journal.path",
        "devices[1].transport.host",
        "mqtt.password_file",
        "metrics.tls_cert_file",
    ],
)
def test_a_nul_byte_in_a_path_is_one_line(tmp_path: Path, key: str) -> None:
    doc = example(tmp_path)
    if key == "devices[1].transport.host":
        doc["devices"][1]["transport"] = {"type": "rtu", "serial_port": "/dev/tty\x00S0"}
        key = "devices[1].transport.serial_port"
    elif key.startswith("mqtt"):
        doc["mqtt"] = {"enabled": True, "username": "u", "password_file": "a\x00b"}
    elif key.startswith("metrics"):
        doc["metrics"] = {"tls_cert_file": "a\x00b", "tls_key_file": "k"}
    else:
        _set(doc, key, "a\x00b")
    line = refused_by_both(write(tmp_path, doc))
    assert f": {key}: " in line
    assert "NUL byte" in line
    assert "\x00" not in line


def test_a_huge_or_odd_value_is_cut_short_in_the_message(tmp_path: Path) -> None:
    doc = example(tmp_path)
    doc["site"] = "x\n" * 200_000
    line = refused_by_both(write(tmp_path, doc))
    assert len(line) < 500
    assert line.startswith(f"feederd: {tmp_path / 'feederd.toml'}: site: ")
    doc = example(tmp_path)
    doc["devices"][1]["transport"] = {"type": "tcp", "host": "192.0.2.1", "\x00\n": 1}
    line = refused_by_both(write(tmp_path, doc))
    assert "unknown key" in line


def test_a_legacy_transport_of_the_wrong_type_is_one_line(tmp_path: Path) -> None:
    doc = example(tmp_path)
    doc["devices"][1]["transport"] = ["modbus-tcp"]
    doc["devices"][1]["host"] = "192.0.2.1"
    line = refused_by_both(write(tmp_path, doc))
    assert "devices[1]: transport ['modbus-tcp'] is not known" in line, line


def test_a_register_map_with_hostile_content_is_one_line(tmp_path: Path) -> None:
    doc = example(tmp_path)
    doc["devices"][4]["register_map"] = "map.toml"
    point = "[[points]]\nname = 'p_kw'\naddress = 1\ntype = 'float32'\n"
    for text, expected in (
        (b"[map]\nname = '\xff'\n", "not valid UTF-8"),
        (b"x = " + b"[" * 2000 + b"]" * 2000, "nested too deeply"),
        (b"x" + b".x" * 100_000 + b" = 1", "a dotted key of more than 32 parts"),
        (f"{point}scale = {'9' * 4000}\n".encode(), "scale: must be a finite non-zero number"),
        (f"{point}min = nan\n".encode(), "min: must be a finite number"),
        (point.replace("'float32'", "['float32']").encode(), "type: must be one of"),
        (point.replace("address = 1", "address = 65535").encode(), "ends past 65535"),
    ):
        (tmp_path / "map.toml").write_bytes(text)
        line = refused_by_both(write(tmp_path, doc))
        assert "devices[4].register_map: " in line
        assert expected in line, line


def test_a_meter_map_without_p_kw_is_refused_by_check_not_only_by_run(tmp_path: Path) -> None:
    doc = example(tmp_path)
    (tmp_path / "meter.toml").write_text(
        "[[points]]\nname = 'v_ll_v'\naddress = 1\ntype = 'float32'\n"
    )
    doc["devices"][0]["register_map"] = "meter.toml"
    line = refused_by_both(write(tmp_path, doc))
    assert "devices[0].register_map: " in line
    assert "a meter map needs a point named 'p_kw'" in line


# -- systemd credentials ---------------------------------------------------------------------


def test_a_credential_outside_systemd_is_a_note_for_check_and_an_error_for_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    doc = example(tmp_path)
    doc["mqtt"] = {"enabled": True, "username": "feederd", "password_file": "credential:pw"}
    path = write(tmp_path, doc)
    code, out, err = cli("check", "--config", str(path))
    assert code == 0, err
    assert (
        "note: mqtt.password_file: 'credential:pw' is a systemd credential: it cannot be "
        "checked here (no $CREDENTIALS_DIRECTORY)"
    ) in out
    code, out, err = cli("run", "--config", str(path))
    assert code == 2
    assert err == (
        f"feederd: {path}: mqtt.password_file: 'credential:pw' needs $CREDENTIALS_DIRECTORY "
        "(run under systemd)\n"
    )
    # a name that could leave the folder is refused everywhere
    doc["mqtt"]["password_file"] = "credential:../pw"
    refused_by_both(write(tmp_path, doc))


def test_under_systemd_check_reads_the_credentials_as_run_does(
    tmp_path: Path, odd_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "pw").write_text("s3cret\n")
    os.symlink(odd_files["device"], creds / "zero")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    doc = example(tmp_path)
    doc["mqtt"] = {"enabled": True, "username": "feederd", "password_file": "credential:pw"}
    path = write(tmp_path, doc)
    accepted_by_both(path)
    _code, out, _err = cli("check", "--config", str(path))
    assert "cannot be checked here" not in out
    doc["mqtt"]["password_file"] = "credential:zero"
    line = refused_by_both(write(tmp_path, doc))
    assert "mqtt.password_file: " in line
    assert "is a device, not a regular file" in line


# -- the installed command -----------------------------------------------------------------


@pytest.mark.integration
def test_the_installed_command_refuses_with_one_line(tmp_path: Path) -> None:
    doc = example(tmp_path)
    doc["devices"][4]["register_map"] = "/dev/zero"
    for path in (write(tmp_path, doc, "a.toml"), write(tmp_path, b"x = " + b"[" * 5000, "b.toml")):
        for command in ("check", "run"):
            proc = subprocess.run(
                [FEEDERD, command, "--config", str(path)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert proc.returncode == 2, proc.stderr
            assert len(proc.stderr.splitlines()) == 1, proc.stderr
            assert "Traceback" not in proc.stderr
