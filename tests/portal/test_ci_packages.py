""".ci/run installs what it uses when absent (.ci/packages.sh), and nothing when all is there."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs

ROOT = Path(__file__).resolve().parents[2]


def _bash(script: str, **env: str) -> subprocess.CompletedProcess:
    # PATH and HOME as the caller has them: the Makefile's interpreter is found the same way.
    keep = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source .ci/packages.sh; {script}"],
        cwd=ROOT,
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_ci_script_parses():
    for script in (".ci/run", ".ci/packages.sh"):
        result = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_on_a_machine_with_everything_installing_is_a_no_op():
    result = _bash("ci_missing_packages")
    assert result.returncode == 0, result.stderr
    if result.stdout.strip():
        needs(f"Debian packages CI installs (run .ci/run once): {result.stdout.split()}")
    run = _bash('CI_DRY_RUN=1 ci_install_packages; echo "[$CI_INSTALLED]"')
    assert run.stdout.splitlines() == ["every package CI uses is installed", "[]"]


@pytest.mark.parametrize(
    ("absent", "package"),
    [
        ("pg_ctlcluster", "postgresql"),
        ("psql", "postgresql-client"),
        ("pg_isready", "postgresql-client"),
        ("redis-server", "redis-server"),
        ("redis-cli", "redis-tools"),
        ("make", "make"),
        ("venv", "python3-venv"),
        ("chromium", "chromium"),
        ("cjk-fonts", "fonts-noto-cjk"),
    ],
)
def test_each_missing_tool_brings_its_debian_package(absent, package):
    result = _bash("ci_missing_packages", CI_ASSUME_ABSENT=absent)
    assert result.returncode == 0, result.stderr
    assert package in result.stdout.split()


def test_a_fresh_machine_gets_one_non_interactive_install():
    absent = "pg_ctlcluster psql redis-server redis-cli make venv chromium cjk-fonts"
    result = _bash(
        'CI_DRY_RUN=1 ci_install_packages; echo "[$CI_INSTALLED]"; '
        "ci_freshly_installed postgresql && echo fresh-postgres",
        CI_ASSUME_ABSENT=absent,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    packages = (
        "chromium fonts-noto-cjk make postgresql postgresql-client python3-venv redis-server "
        "redis-tools"
    )
    assert f"apt-get install -y -qq --no-install-recommends {packages}" in lines
    assert f"[{packages}]" in lines
    assert "fresh-postgres" in lines


def test_a_fresh_postgres_trusts_user_postgres_from_this_machine_once(tmp_path):
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n")
    for _ in range(2):
        result = _bash(f"ci_trust_local_postgres {hba}")
        assert result.returncode == 0, result.stderr
    lines = hba.read_text().splitlines()
    assert lines[1:3] == ["host all postgres 127.0.0.1/32 trust", "host all postgres ::1/128 trust"]
    assert lines[3:] == ["local all postgres peer", "host all all 127.0.0.1/32 scram-sha-256"]
    assert sum(line.startswith("# alliance portal CI") for line in lines) == 1
