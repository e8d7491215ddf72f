"""The settings module refuses configurations that would run wrongly: each check runs a fresh Python with
only the environment under test, since settings are read once per process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "x" * 60,
    "ALLOWED_HOSTS": "progress.example.org",
    "AUDIT_HEAD_DIR": "/tmp/audit-heads-settings-test",  # noqa: S108 (never written: settings only)
    "AUDIT_SIGNING_KEY": "k" * 40,
    "FIELD_ENCRYPTION_KEYS": "S2V5LW9mLXRoZS1zZXR0aW5ncy10ZXN0cy0wMDAwMDA=",
}


def settings_with(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)",
        ],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "progress_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_on_sqlite():
    result = settings_with(PRODUCTION)
    assert result.returncode != 0
    assert "DATABASE_URL must point at PostgreSQL" in result.stderr


def test_production_starts_on_postgresql():
    result = settings_with({**PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(("value", "debug"), [("1", True), ("TRUE", True), ("on", True), ("0", False), ("No", False)])
def test_a_boolean_variable_takes_true_and_false_words(value, debug):
    result = settings_with({"DEBUG": value})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(debug)


@pytest.mark.parametrize("value", ["ture", "enabled", "2", "y"])
def test_a_boolean_variable_with_another_value_is_an_error_not_false(value):
    result = settings_with({"DEBUG": value})
    assert result.returncode != 0
    assert f"DEBUG={value!r} is not a true or false word" in result.stderr


@pytest.mark.parametrize("missing", ["AUDIT_HEAD_DIR", "AUDIT_SIGNING_KEY"])
def test_production_needs_the_audit_head_directory_and_signing_key(missing):
    env = {**PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres"}
    del env[missing]
    result = settings_with(env)
    assert result.returncode != 0
    assert "AUDIT_HEAD_DIR and AUDIT_SIGNING_KEY must be set" in result.stderr
