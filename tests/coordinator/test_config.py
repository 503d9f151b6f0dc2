"""``fleet.toml``: the example is accepted and builds the fleet the core takes; every broken
one is refused through the CLI with one line naming the file and the key, exit 2."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import pytest

from controller.cli import main
from controller.config import ConfigError
from coordinator.config import load_fleet

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "fleet.example.toml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``feederd``'s entry point in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(["feederd", *args], code, out.getvalue(), err.getvalue())


def _example(tmp_path: Path) -> str:
    """The example with its journal in the test's folder (relative: next to the config)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    return text.replace('"/var/lib/feederd-coordinator/journal.sqlite"', '"journal.sqlite"')


def test_the_example_builds_the_fleet_the_core_takes(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(_example(tmp_path), encoding="utf-8")
    loaded = load_fleet(path)
    f = loaded.fleet
    assert f.name == "district-north"
    assert f.sites == ("north-1", "north-2", "north-3")
    assert [t.name for t in f.transformers] == ["T1"]
    north2 = f.feeder("north-2")
    assert north2 is not None
    assert north2.transformer == "T1"
    assert dict(f.groups) == {
        "north": ("north-1", "north-2", "north-3"),
        "t1": ("north-1", "north-2"),
    }
    assert f.flex_filter == "feederd/+/flex"
    assert f.target_topic == "feederd-fleet/district-north/target"
    assert loaded.journal_path == tmp_path / "journal.sqlite"
    assert not loaded.journal_path.exists()  # check never creates the journal
    s = loaded.mqtt_settings()
    assert (s.host, s.port, s.client_id) == ("127.0.0.1", 1883, "feederd-fleet-district-north-a")
    assert s.online_topic == "feederd-fleet/district-north/online"  # the coordinator's will
    assert (loaded.metrics.address, loaded.metrics.port) == ("127.0.0.1", 9101)


def test_defaults_topic_root_and_client_id_follow_the_name_and_shared_subscription(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        'name = "east"\nshared_subscription = "coordinators"\n[journal]\npath = "j.sqlite"\n'
        '[[feeders]]\nsite = "e1"\nrating_kw = 100.0\n',
        encoding="utf-8",
    )
    loaded = load_fleet(path)
    assert loaded.fleet.topic_root == "feederd-fleet/east"
    assert loaded.client_id == "feederd-fleet-east"
    assert loaded.fleet.flex_filter == "$share/coordinators/feederd/+/flex"
    assert loaded.fleet.dr_status_filter == "feederd/+/dr/status"  # read by both of a pair


def test_check_prints_the_fleet_and_its_topics(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(_example(tmp_path), encoding="utf-8")
    proc = cli("coordinate", "check", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "fleet district-north: 3 feeders" in proc.stdout
    assert "transformer T1" in proc.stdout
    assert "feeds 2" in proc.stdout
    assert "group north" in proc.stdout
    assert "reads  feederd/+/flex (QoS 1)" in proc.stdout
    assert "writes feederd/<site>/dr/event" in proc.stdout
    assert proc.stderr == ""


BROKEN = [
    # (what is replaced, by what, the key and problem the line must name)
    ('name = "district-north"\n', "", "name: missing required key"),
    ("interval_s = 30.0", "interval_s = 30.0\ncolour = 'red'", "colour: unknown key"),
    (
        'north = ["north-1", "north-2", "north-3"]',
        'north = ["north-1", "north-9"]',
        "groups.north: no [[feeders]] has site 'north-9'",
    ),
    (
        'site = "north-2"',
        'site = "north-1"',
        "feeders[1].site: site 'north-1' is listed twice",
    ),
    ("rating_kw = 4000.0", "rating_kw = -4000.0", "feeders[2].rating_kw: Input should be greater"),
    ('mode = "cost"', 'mode = "cheapest"', "mode: Input should be 'cost' or 'fair'"),
    (
        'topic_root = "feederd-fleet/district-north"',
        'topic_root = "feederd-fleet/+"',
        "topic_root: String should match pattern",
    ),
    (
        'feeder_root = "feederd"',
        'feeder_root = "feederd/#"',
        "feeder_root: String should match pattern",
    ),
    ("interval_s = 30.0", "interval_s = nan", "interval_s: must be a finite number"),
    (
        'transformer = "T1"\n\n[[feeders]]\nsite = "north-2"',
        'transformer = "T9"\n\n[[feeders]]\nsite = "north-2"',
        "feeders[0].transformer: no [[transformers]] is named 'T9'",
    ),
    ('t1 = ["north-1", "north-2"]', 'all = ["north-1"]', "groups.all: 'all' is every feeder"),
    ("[mqtt]", "[mqtt]\nenabled = false", "mqtt.enabled: the coordinator always uses MQTT"),
    ("[mqtt]", '[mqtt]\npassword = "hunter2"', "mqtt.password: unknown key"),
    (
        "keepalive_s = 30",
        'keepalive_s = 30\npassword_file = "secret"',
        "mqtt: 'password_file' needs a 'username'",
    ),
    ("port = 9101", "port = 70000", "metrics.port: Input should be"),
    ('shared_subscription = ""', 'shared_subscription = "a/b"', "shared_subscription: String"),
    ("priority = 0", "priority = 5000", "priority: Input should be less than or equal to 1000"),
    ("interval_s = 30.0", "interval_s = 30.0 30", "Expected newline or end of document"),
    (
        "[metrics]",
        '[openadr]\nenabled = true\nvtn_url = "https://vtn.example/OpenADR2/Simple/2.0b"\n'
        'ven_name = "north"\nsign = false\nvtn_fingerprint = "' + ":".join(["AB"] * 10) + '"\n'
        'group = "south"\n\n[metrics]',
        "openadr.group: no [groups] is named 'south'",
    ),
    (
        "[metrics]",
        '[openadr]\nenabled = true\nven_name = "north"\n\n[metrics]',
        "openadr: an enabled [openadr] needs 'vtn_url'",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN, ids=[b[2][:40] for b in BROKEN])
def test_a_broken_fleet_toml_is_one_line_naming_the_key_and_exit_2(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = _example(tmp_path)
    assert old in text, old
    path = tmp_path / "fleet.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    proc = cli("coordinate", "check", "--config", str(path))
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"feederd: {path}: "), lines[0]
    assert expected in lines[0]
    # the daemon refuses it the same way, before anything runs
    assert cli("coordinate", "--config", str(path)).stderr == proc.stderr


def test_a_missing_file_and_an_unreadable_secret_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    proc = cli("coordinate", "check", "--config", str(missing))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert f"{missing}: cannot read config" in proc.stderr
    path = tmp_path / "fleet.toml"
    path.write_text(
        _example(tmp_path).replace(
            "keepalive_s = 30", 'keepalive_s = 30\nusername = "c"\npassword_file = "absent"'
        ),
        encoding="utf-8",
    )
    proc = cli("coordinate", "check", "--config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "mqtt.password_file" in proc.stderr


def test_a_journal_path_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite").write_text("not sqlite")
    path = tmp_path / "fleet.toml"
    path.write_text(_example(tmp_path), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"journal\.path: .* is not a journal \(not an SQLite database file\)"
    ):
        load_fleet(path)


def test_a_credential_outside_systemd_is_a_note_for_check_and_refused_by_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "fleet.toml"
    path.write_text(
        _example(tmp_path).replace(
            "keepalive_s = 30",
            'keepalive_s = 30\nusername = "c"\npassword_file = "credential:mqtt-password"',
        ),
        encoding="utf-8",
    )
    proc = cli("coordinate", "check", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "note: mqtt.password_file: 'credential:mqtt-password' is a systemd credential" in (
        proc.stdout
    )
    proc = cli("coordinate", "--config", str(path))
    assert proc.returncode == 2
    assert "needs $CREDENTIALS_DIRECTORY" in proc.stderr
