"""Settings are validated once, with errors that name the variable."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from dotenv import dotenv_values

from bot.config import SettingsError, env_variable_names, load_settings

from .helpers.servers import ROOT

NO_FILE = Path("/nonexistent/.env")


def load(**environ: str):
    return load_settings(environ=environ, env_file=NO_FILE)


def test_defaults_are_sensible_without_any_setting():
    """A new user needs no .env: SQLite store, local ports, the default policy."""
    settings = load()
    assert settings.database_url.startswith("sqlite:///")
    assert (settings.rasa_port, settings.action_port) == (5005, 5055)
    assert settings.policy.grace_days == 1
    assert settings.policy.human_value_threshold == Decimal("250")
    assert settings.policy.address_change_direct_statuses == {"pending"}


def test_environment_values_are_parsed():
    """Numbers, decimals and status lists are read from text."""
    settings = load(POLICY_GRACE_DAYS="2", POLICY_HUMAN_VALUE_THRESHOLD="99.50",
                    POLICY_ADDRESS_REDIRECT_STATUSES="in_transit, failed_attempt", RASA_PORT="6005")
    assert settings.policy.grace_days == 2
    assert settings.policy.human_value_threshold == Decimal("99.50")
    assert settings.policy.address_redirect_statuses == {"in_transit", "failed_attempt"}
    assert settings.rasa_port == 6005


def test_dotenv_file_is_read_and_environment_wins(tmp_path):
    """`.env` supplies values; the process environment overrides them."""
    env_file = tmp_path / ".env"
    env_file.write_text("SHOP_NAME=Corner Shop\nRASA_PORT=7005\n")
    settings = load_settings(environ={"RASA_PORT": "7006"}, env_file=env_file)
    assert (settings.shop_name, settings.rasa_port) == ("Corner Shop", 7006)


@pytest.mark.parametrize(
    "environ, variable",
    [
        ({"POLICY_GRACE_DAYS": "two"}, "POLICY_GRACE_DAYS"),  # not a number
        ({"POLICY_GRACE_DAYS": "-1"}, "POLICY_GRACE_DAYS"),  # negative
        ({"POLICY_LOST_BUSINESS_DAYS": "2"}, "POLICY_LOST_BUSINESS_DAYS"),  # lost before stalled
        ({"POLICY_ADDRESS_CHANGE_DIRECT_STATUSES": "shipped"}, "POLICY_ADDRESS_CHANGE_DIRECT_STATUSES"),
        ({"POLICY_GOODWILL_CODE": "SORRY 10!"}, "POLICY_GOODWILL_CODE"),
        ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL"),  # unsupported backend
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"SHOP_TIMEZONE": "Mars/Olympus"}, "SHOP_TIMEZONE"),
        ({"SHOP_CURRENCY": "euro"}, "SHOP_CURRENCY"),
        ({"RASA_PORT": "70000"}, "RASA_PORT"),
        ({"ACTION_PORT": "5005"}, "ACTION_PORT"),  # same as the Rasa port
        ({"BOT_ENV": "staging"}, "BOT_ENV"),
        ({"BOT_ENV": "production"}, "RASA_AUTH_TOKEN"),  # no secret in production
        ({"BOT_ENV": "production", "RASA_AUTH_TOKEN": "dev-token-change-me"}, "RASA_AUTH_TOKEN"),  # the old placeholder
        ({"BOT_ENV": "production", "RASA_AUTH_TOKEN": "s3cr3t-4f9a2"}, "RASA_AUTH_TOKEN"),  # under 32 characters
        ({"RASA_HOST": "0.0.0.0", "RASA_AUTH_TOKEN": "dev-token-change-me"}, "RASA_AUTH_TOKEN"),  # reachable, weak
        ({"BOT_ENV": "production", "RASA_AUTH_TOKEN": "x" * 43}, "ACTION_SERVER_TOKEN"),
        ({"ACTION_HOST": "10.0.0.5", "ACTION_SERVER_TOKEN": "short"}, "ACTION_SERVER_TOKEN"),
        ({"REST_TOKEN": "secret"}, "REST_TOKEN"),  # a guessable REST token
        ({"BOT_ENV": "production", "RASA_CORS_ORIGINS": "*"}, "RASA_CORS_ORIGINS"),
        ({"RASA_CORS_ORIGINS": "https://shop.example/path"}, "RASA_CORS_ORIGINS"),
    ],
)
def test_bad_settings_are_a_clear_error_naming_the_variable(environ, variable):
    """Each unusable value stops start-up with the variable's name in the message."""
    with pytest.raises(SettingsError) as error:
        load(**environ)
    assert f"  {variable}: " in str(error.value)


def test_several_bad_settings_are_reported_together():
    """A shop fixing its .env sees every problem at once, not one per restart."""
    with pytest.raises(SettingsError) as error:
        load(POLICY_GRACE_DAYS="x", RASA_PORT="x")
    assert "POLICY_GRACE_DAYS" in str(error.value) and "RASA_PORT" in str(error.value)


def test_production_accepts_real_tokens():
    """Random secrets of 32 characters or more pass in production."""
    assert load(BOT_ENV="production", RASA_AUTH_TOKEN="r" * 43, ACTION_SERVER_TOKEN="a" * 43).env == "production"


def test_setup_writes_random_secrets_once_and_keeps_the_environments(tmp_path):
    """Missing or placeholder tokens get a fresh random value in .env; set ones are left alone."""
    from bot.cli import ensure_secrets

    env_file = tmp_path / ".env"
    env_file.write_text("SHOP_NAME=Corner Shop\nRASA_AUTH_TOKEN=dev-token-change-me\n")
    assert ensure_secrets(env_file, environ={}) == ["RASA_AUTH_TOKEN", "ACTION_SERVER_TOKEN",
                                                    "AFTERSHIP_WEBHOOK_SECRET"]
    first = dotenv_values(env_file)
    assert len(first["AFTERSHIP_WEBHOOK_SECRET"]) >= 32
    assert first["SHOP_NAME"] == "Corner Shop"
    assert len(first["RASA_AUTH_TOKEN"]) >= 32 and len(first["ACTION_SERVER_TOKEN"]) >= 32
    assert first["RASA_AUTH_TOKEN"] != first["ACTION_SERVER_TOKEN"]
    assert ensure_secrets(env_file, environ={}) == [] and dotenv_values(env_file) == first  # idempotent
    other = tmp_path / "other.env"
    assert ensure_secrets(other, environ={"RASA_AUTH_TOKEN": "from-the-environment",
                                          "AFTERSHIP_WEBHOOK_SECRET": ""}) == ["ACTION_SERVER_TOKEN"]
    assert oct(other.stat().st_mode & 0o777) == "0o600"
    # A feed secret set empty on purpose keeps the feed off; a shop's own AfterShip secret is never replaced.
    kept = tmp_path / "kept.env"
    kept.write_text("AFTERSHIP_WEBHOOK_SECRET=\n")
    assert "AFTERSHIP_WEBHOOK_SECRET" not in ensure_secrets(kept, environ={})
    short = tmp_path / "short.env"
    short.write_text("AFTERSHIP_WEBHOOK_SECRET=shopsown\n")
    ensure_secrets(short, environ={})
    assert dotenv_values(short)["AFTERSHIP_WEBHOOK_SECRET"] == "shopsown"


def test_check_settings_lists_what_is_unsafe_for_production(tmp_path):
    """`check-settings` names every unsafe production setting and fails in production."""
    env = {"PATH": "/usr/bin:/bin", "BOT_ENV": "production", "RASA_AUTH_TOKEN": "r" * 43,
           "ACTION_SERVER_TOKEN": "a" * 43, "WIDGET_ORIGINS": "*", "ACTION_HOST": "0.0.0.0"}
    result = subprocess.run([sys.executable, "-m", "bot", "check-settings"], cwd=tmp_path, capture_output=True,
                            text=True, env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1, result.stdout + result.stderr
    for problem in ("WIDGET_ORIGINS", "ACTION_HOST", "DATABASE_URL is SQLite"):
        assert problem in result.stdout
    assert "r" * 43 not in result.stdout


def test_env_example_lists_every_setting():
    """`.env.example` documents exactly the variables the settings read."""
    text = (ROOT / ".env.example").read_text()
    listed = {line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert set(env_variable_names()) <= listed
    assert load_settings(environ={}, env_file=ROOT / ".env.example") == load()


@pytest.mark.slow  # runs `python -m bot check-settings`
def test_cli_refuses_to_start_on_a_bad_setting():
    """The commands exit with status 2 and the message, not a traceback."""
    result = subprocess.run([sys.executable, "-m", "bot", "check-settings"], cwd=ROOT, capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "POLICY_STALLED_BUSINESS_DAYS": "zero"})
    assert result.returncode == 2
    assert "POLICY_STALLED_BUSINESS_DAYS: value is not a valid integer" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("header, ok", [
    ("Authorization: Bearer ${ACTION_SERVER_TOKEN}", True),
    ('Authorization: "Bearer ${ACTION_SERVER_TOKEN}"', False),  # Rasa fills ${...} in plain values only
    ("X-Other: ${ACTION_SERVER_TOKEN}", False),
])
def test_the_runner_refuses_an_endpoints_file_that_would_not_send_the_action_token(tmp_path, header, ok):
    """Started with such a file, every action would get 401: the runner says so before starting anything."""
    from bot.serving.runner import StartupError, check_secrets

    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(f"action_endpoint:\n  url: ${{ACTION_ENDPOINT_URL}}\n  headers:\n    {header}\n")
    settings = load(RASA_AUTH_TOKEN="r" * 43, ACTION_SERVER_TOKEN="a" * 43, RASA_ENDPOINTS=str(endpoints))
    if ok:
        check_secrets(settings)
    else:
        with pytest.raises(StartupError, match="Authorization: Bearer"):
            check_secrets(settings)


def test_the_committed_endpoints_file_sends_the_action_token():
    """The endpoints.yml `make run` uses passes the runner's check."""
    from bot.serving.runner import check_secrets

    check_secrets(load(RASA_AUTH_TOKEN="r" * 43, ACTION_SERVER_TOKEN="a" * 43))
