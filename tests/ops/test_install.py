"""deploy/install.sh, run for real into a temporary root (``DESTDIR``): the venv built from
this checkout, config, credentials and state laid down with their modes, the unit copied and
checked by ``systemd-analyze verify``, and the journal the installed feederd creates.

Not run here, because they would change the machine the tests run on: ``useradd``/``usermod``
(the system user ``feederd``), ``chown`` to it, and ``systemctl daemon-reload/enable`` — the
script skips exactly these under ``DESTDIR`` and says so.

The checkout is only read: the install builds from a copy (pip would leave ``build/`` and
``*.egg-info`` in the source tree), and the refusal test runs the script as ``nobody`` from its
standard input, since ``nobody`` cannot open a file in a checkout under a 0700 directory
(``/root`` on Debian).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"


def _pip_environment() -> dict[str, str]:
    """pip's own settings of the caller (index, find-links, certificates), and the caller's
    download cache, so the staged install finds the packages as the caller's pip would, and
    fetches each one once however often the test runs."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    for key in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _build_artefacts() -> dict[str, int]:
    """What pip leaves in a source tree it builds in (each file, with its mtime)."""
    found = [REPO / "build", REPO / "dist", *REPO.glob("*.egg-info")]
    return {
        str(p): p.stat().st_mtime_ns
        for top in found
        if top.exists()
        for p in (top, *top.rglob("*"))
    }


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One install into a fresh root (it builds a venv: ~35 s), shared by the tests here."""
    root = tmp_path_factory.mktemp("root")
    scratch = tmp_path_factory.mktemp("install-tmp")
    python = shutil.which("python3") or "python3"
    before = _build_artefacts()
    out = subprocess.run(
        ["sh", str(INSTALL), "--coordinator"],
        env={"PATH": os.environ["PATH"], "HOME": str(root), "DESTDIR": str(root),
             "PYTHON": python, "TMPDIR": str(scratch), **_pip_environment()},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    # the checkout was only read: no build/ or *.egg-info made or touched in it ...
    assert _build_artefacts() == before
    # ... and the copy it built from is gone
    assert list(scratch.iterdir()) == []
    return root, out.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_install_lays_down_venv_config_state_and_unit(staged: tuple[Path, str]) -> None:
    root, stdout = staged
    # it says what it skipped
    assert "skipping useradd, ownership and systemctl" in stdout
    assert "systemctl daemon-reload/enable not run" in stdout
    # a venv with feederd installed from this checkout (not a link to it)
    feederd = root / "opt/feederd/venv/bin/feederd"
    assert os.access(feederd, os.X_OK)
    where = subprocess.run(
        [str(root / "opt/feederd/venv/bin/python"), "-c",
         "import controller; print(controller.__file__)"],
        capture_output=True, text=True, check=True, timeout=60,
        cwd=root,  # not the checkout, which `-c` would put first on sys.path
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(root / "opt/feederd/venv/lib/"))
    # the example config passed `feederd check` at the end of the script
    assert "feeder-head meter" in stdout
    config = root / "etc/feederd/feederd.toml"
    assert config.read_text() == (REPO / "deploy/feederd.example.toml").read_text()
    modes = {
        "etc/feederd": 0o750,
        "etc/feederd/feederd.toml": 0o640,
        "etc/feederd/credentials": 0o700,
        "etc/feederd/credentials/mqtt-password": 0o600,
        "var/lib/feederd": 0o750,
        "opt/feederd": 0o755,
        "etc/systemd/system/feederd.service": 0o644,
    }
    assert {p: _mode(root / p) for p in modes} == modes
    assert (root / "etc/feederd/credentials/mqtt-password").read_text() == ""
    # default paths: the unit is the repository's, unchanged
    unit = root / "etc/systemd/system/feederd.service"
    assert unit.read_text() == (REPO / "deploy/feederd.service").read_text()
    # --coordinator: the fleet coordinator's unit and config too, checked at the end
    fleet = {
        "etc/feederd-coordinator": 0o750,
        "etc/feederd-coordinator/fleet.toml": 0o640,
        "etc/feederd-coordinator/credentials": 0o700,
        "etc/feederd-coordinator/credentials/mqtt-password": 0o600,
        "etc/systemd/system/feederd-coordinator.service": 0o644,
    }
    assert {p: _mode(root / p) for p in fleet} == fleet
    assert (root / "etc/feederd-coordinator/fleet.toml").read_text() == (
        REPO / "deploy/fleet.example.toml"
    ).read_text()
    assert "fleet district-north:" in stdout  # `feederd coordinate check` on it
    assert (root / "etc/systemd/system/feederd-coordinator.service").read_text() == (
        REPO / "deploy/feederd-coordinator.service"
    ).read_text()


@pytest.mark.slow
@pytest.mark.integration
def test_installed_unit_passes_systemd_analyze_verify(
    staged: tuple[Path, str], tmp_path: Path
) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install -y systemd)")
    root, _ = staged
    # verify checks that ExecStart= exists: point the unit at the staged tree, exactly the
    # rewrite install.sh does for a non-default PREFIX/CONFIG_DIR
    text = (root / "etc/systemd/system/feederd.service").read_text()
    # and the fleet coordinator's unit, which runs the same installed feederd
    coordinator = (REPO / "deploy/feederd-coordinator.service").read_text()
    for name, original in (("feederd.service", text), ("feederd-coordinator.service", coordinator)):
        staged_unit = original.replace("/opt/feederd", f"{root}/opt/feederd")
        (tmp_path / name).write_text(staged_unit.replace("/etc/feederd", f"{root}/etc/feederd"))
        out = subprocess.run(
            [analyze, "verify", "--man=no", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, name + ": " + out.stdout + out.stderr
        assert out.stderr.strip() == ""


@pytest.mark.slow
@pytest.mark.integration
def test_installed_feederd_creates_an_owner_only_journal(staged: tuple[Path, str]) -> None:
    root, _ = staged
    state = root / "var/lib/feederd"
    journal = state / "journal.sqlite"
    out = subprocess.run(
        [str(root / "opt/feederd/venv/bin/feederd"), "event", "add", "--journal", str(journal),
         "--id", "inst-1", "--type", "import_limit", "--kw", "1500",
         "--end", (datetime.now(UTC) + timedelta(days=1)).isoformat()],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    files = [p for p in state.iterdir() if p.name.startswith("journal.sqlite")]
    assert journal in files
    # the database and its -wal/-shm companions: owner-only, even under umask 022
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert _mode(state) == 0o750


@pytest.mark.integration
def test_install_refuses_without_root_or_destdir() -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no DESTDIR, whatever the caller's environment has
    if os.geteuid() != 0:
        out = subprocess.run(
            ["sh", str(INSTALL)], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert out.returncode == 2, out.stdout + out.stderr
        assert "run as root (or set DESTDIR" in out.stderr
        return
    # as root, run it as nobody (setpriv drops the ids) so the check itself is exercised. The
    # script comes on standard input (`sh -s`), read by this process: nobody may not be allowed
    # to open it where the checkout is (under a 0700 home). Its working directory is /, where
    # every user may go, for the script's `cd "$(dirname "$0")/.."`.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed (util-linux)")
    out = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-s"],
        input=INSTALL.read_text(),
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "run as root (or set DESTDIR" in out.stderr
    assert out.stdout == ""  # refused before it did anything
