"""Settings come from the environment; the embedded default generates what it needs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_checks_pass_with_the_production_variables(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            "DEBUG": "0",
            "SECRET_KEY": "x7!" + "k" * 60 + "Qz9#long-random-production-secret",
            "ALLOWED_HOSTS": "portal.alliance.example",
            "PORTAL_HTTPS": "1",
            "PORTAL_VAR_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_embedded_default_generates_and_reuses_a_secret_key(tmp_path):
    first = _manage("check", env={"PORTAL_VAR_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    assert "Generated a new SECRET_KEY" in first.stderr
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 50
    assert oct((tmp_path / "secret_key").stat().st_mode)[-3:] == "600"
    second = _manage("check", env={"PORTAL_VAR_DIR": str(tmp_path)})
    assert "Generated" not in second.stderr
    assert (tmp_path / "secret_key").read_text() == key


@pytest.mark.parametrize("name", ["lint-imports"])
def test_import_contracts_hold(name):
    result = subprocess.run(
        [str(Path(sys.executable).parent / name)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
