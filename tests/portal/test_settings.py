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


def test_embedded_default_generates_the_portals_keys_once(tmp_path):
    script = "from portal.common import keys; print(keys.portal_public_text()); " + (
        "print(keys.portal_public_text('AUDIT_LOG_KEY'))"
    )
    first = _manage("shell", "-c", script, env={"PORTAL_VAR_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    assert "Generated a new PORTAL_SIGNING_KEY" in first.stderr
    assert "Generated a new AUDIT_LOG_KEY" in first.stderr
    for name in ("portal_signing_key", "audit_log_key"):
        assert oct((tmp_path / name).stat().st_mode)[-3:] == "600"
    signing_key, log_key = first.stdout.split()[-2:]
    assert signing_key != log_key
    second = _manage("shell", "-c", script, env={"PORTAL_VAR_DIR": str(tmp_path)})
    assert "Generated" not in second.stderr
    assert second.stdout.split()[-2:] == [signing_key, log_key]


def test_production_refuses_to_run_without_the_portals_signing_key(tmp_path):
    result = _manage(
        "shell",
        "-c",
        "from portal.common import keys; keys.portal_key()",
        env={
            "SECRET_KEY": "x7!" + "k" * 60 + "Qz9#long-random-production-secret",
            "PORTAL_HTTPS": "1",
            "PORTAL_VAR_DIR": str(tmp_path),
        },
    )
    assert result.returncode != 0
    assert "PORTAL_SIGNING_KEY is required in production" in result.stderr
    assert not (tmp_path / "portal_signing_key").exists()


def test_portal_keygen_prints_new_seeds_and_the_public_halves(tmp_path):
    fresh = _manage("portal_keygen", env={"PORTAL_VAR_DIR": str(tmp_path)})
    assert fresh.returncode == 0, fresh.stderr
    values = dict(line.split("=", 1) for line in fresh.stdout.split())
    assert set(values) == {"PORTAL_SIGNING_KEY", "AUDIT_LOG_KEY"}
    shown = _manage(
        "portal_keygen",
        "--public",
        env={"PORTAL_VAR_DIR": str(tmp_path), "PORTAL_SIGNING_KEY": values["PORTAL_SIGNING_KEY"]},
    )
    from portal.common.keys import key_from_text, public_text

    expected = public_text(key_from_text(values["PORTAL_SIGNING_KEY"]))
    assert f"PORTAL_SIGNING_KEY public: {expected}" in shown.stdout


@pytest.mark.parametrize("secret", ["", None])
def test_production_refuses_to_start_without_a_secret_key(tmp_path, secret):
    env = {"DEBUG": "0", "PORTAL_HTTPS": "1", "PORTAL_VAR_DIR": str(tmp_path)}
    if secret is not None:
        env["SECRET_KEY"] = secret  # set but empty, as in the held-out finding
    result = _manage("check", "--deploy", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY is required in production (PORTAL_HTTPS=1)" in result.stderr
    assert not (tmp_path / "secret_key").exists()
