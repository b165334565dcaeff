"""Which channels open: secrets switch them on, half a configuration is refused, ids are handled once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from bot.config import SettingsError, load_settings
from bot.serving.channels import CONNECTORS, effective_credentials, enabled_channels, write_credentials
from bot.store import db
from bot.store.inbox import KEEP_FOR, first_delivery, forget_old_deliveries

from .helpers.servers import CHANNEL_ENV

NO_FILE = Path("/nonexistent/.env")
WHATSAPP = {k: v for k, v in CHANNEL_ENV.items() if k.startswith("WHATSAPP_")}
MESSENGER = {k: v for k, v in CHANNEL_ENV.items() if k.startswith("MESSENGER_")}


def load(**environ: str):
    return load_settings(environ=environ, env_file=NO_FILE)


def test_channels_are_off_until_their_secrets_are_set():
    """With no secrets, neither Meta channel is started."""
    settings = load()
    assert not settings.channel_enabled("whatsapp") and not settings.channel_enabled("messenger")
    assert set(effective_credentials(settings)).isdisjoint(CONNECTORS.values())


@pytest.mark.parametrize("environ, missing", [
    # one WhatsApp secret set: the other three are named
    ({"WHATSAPP_APP_SECRET": "s"}, ["WHATSAPP_VERIFY_TOKEN", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID"]),
    # Messenger without its page token
    ({"MESSENGER_VERIFY_TOKEN": "v", "MESSENGER_APP_SECRET": "s"}, ["MESSENGER_PAGE_ACCESS_TOKEN"]),
])
def test_a_half_configured_channel_is_refused_naming_what_is_missing(environ, missing):
    """A typo in .env stops start-up instead of failing when Meta first calls."""
    with pytest.raises(SettingsError) as error:
        load(**environ)
    for name in missing:
        assert name in str(error.value)


def test_production_refuses_placeholder_channel_secrets():
    """'change-me' is not an app secret."""
    with pytest.raises(SettingsError, match="MESSENGER_APP_SECRET"):
        load(BOT_ENV="production", RASA_AUTH_TOKEN="r" * 43, ACTION_SERVER_TOKEN="a" * 43,
             **{**MESSENGER, "MESSENGER_APP_SECRET": "change-me"})


@pytest.mark.parametrize("origins, ok", [
    ("https://shop.example.com", True),
    ("https://shop.example.com, http://localhost:3000", True),
    ("", True),
    ("https://shop.example.com/checkout", False),  # a path is not an origin
    ("shop.example.com", False),  # no scheme
])
def test_widget_origins_must_be_origins(origins, ok):
    """WIDGET_ORIGINS takes scheme://host[:port] entries only."""
    if ok:
        assert load(WIDGET_ORIGINS=origins).widget_origins == origins
    else:
        with pytest.raises(SettingsError, match="WIDGET_ORIGINS"):
            load(WIDGET_ORIGINS=origins)


def test_secrets_switch_channels_on_in_the_written_credentials(tmp_path):
    """The runner's credentials file gains exactly the configured channels, and no secret."""
    settings = load(**WHATSAPP)
    written = yaml.safe_load(write_credentials(settings, tmp_path).read_text())
    assert CONNECTORS["whatsapp"] in written and CONNECTORS["messenger"] not in written
    assert "connectors.rest.RestInput" in written and "rest" not in written  # never Rasa's own REST channel
    assert set(enabled_channels(written)) >= {"whatsapp", "widget", "rest"}
    assert not any(secret in yaml.safe_dump(written) for secret in WHATSAPP.values())


@pytest.mark.parametrize("rest_token, listed", [("", False), ("t" * 43, True)])
def test_in_production_rest_is_off_without_its_token(tmp_path, rest_token, listed):
    """A shop's production server opens REST only when REST_TOKEN is set (then every call needs it)."""
    settings = load(BOT_ENV="production", RASA_AUTH_TOKEN="r" * 43, ACTION_SERVER_TOKEN="a" * 43,
                    REST_TOKEN=rest_token)
    written = yaml.safe_load(write_credentials(settings, tmp_path).read_text())
    assert ("connectors.rest.RestInput" in written) is listed and "rest" not in written


def test_an_old_credentials_file_naming_rasas_rest_channel_gets_ours(tmp_path):
    """`rest:` in a shop's credentials.yml opens the channel-scoped REST channel, not Rasa's."""
    (tmp_path / "credentials.yml").write_text("rest:\nrasa.core.channels.rest.RestInput:\n")
    settings = load(RASA_CREDENTIALS=str(tmp_path / "credentials.yml"))
    written = yaml.safe_load(write_credentials(settings, tmp_path / "out").read_text())
    assert list(written) == ["connectors.rest.RestInput", "connectors.updates.UpdatesInput"]


def test_an_unreadable_credentials_file_is_a_clear_error(tmp_path):
    """A broken RASA_CREDENTIALS file is reported with its path."""
    broken = tmp_path / "credentials.yml"
    broken.write_text("rest: [unclosed\n")
    with pytest.raises(ValueError, match="credentials.yml"):
        effective_credentials(load(RASA_CREDENTIALS=str(broken)))
    broken.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="must map"):
        effective_credentials(load(RASA_CREDENTIALS=str(broken)))


def test_a_message_id_is_handled_once_per_channel(engine):
    """The second delivery of an id is recognised, on every replica, until it is forgotten."""
    now = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc)
    with db.session_scope(engine) as session:
        assert first_delivery(session=session, channel="whatsapp", message_id="wamid.1", now=now)
        assert not first_delivery(session=session, channel="whatsapp", message_id="wamid.1", now=now)
        assert first_delivery(session=session, channel="messenger", message_id="wamid.1", now=now)
    with db.session_scope(engine) as session:
        assert not first_delivery(session=session, channel="whatsapp", message_id="wamid.1", now=now)
        assert forget_old_deliveries(session=session, now=now + KEEP_FOR + dt.timedelta(minutes=1)) == 2
    with db.session_scope(engine) as session:
        assert first_delivery(session=session, channel="whatsapp", message_id="wamid.1", now=now)
    # Meta's re-deliveries stop within days: an id is forgotten once it is older than that.
    later = now + KEEP_FOR + dt.timedelta(hours=1)
    with db.session_scope(engine) as session:
        assert first_delivery(session=session, channel="whatsapp", message_id="wamid.2", now=later)
        assert first_delivery(session=session, channel="whatsapp", message_id="wamid.1", now=later)
