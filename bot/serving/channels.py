"""Which input channels the Rasa server opens, from the credentials file and the settings.

`credentials.yml` lists the channels that need no secret (REST, the site
widget).  WhatsApp and Messenger are added when all of their secrets are set in
the environment, so a shop switches a channel on by setting its secrets and
nothing secret is ever written to a committed file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import yaml

from bot.config import Settings

#: channel -> the connector class Rasa loads for it, for channels switched on by their secrets.
CONNECTORS = {
    "whatsapp": "connectors.whatsapp.WhatsAppInput",
    "messenger": "connectors.messenger.MessengerInput",
}
#: The site widget's channel; it needs no secret, so credentials.yml lists it.
WIDGET = "connectors.widget.WidgetInput"
#: The tracking feeds' webhooks and the outbox of proactive updates: always on (each feed needs its secret).
UPDATES = "connectors.updates.UpdatesInput"
#: The REST channel; in production it starts only with REST_TOKEN set.
REST = "connectors.rest.RestInput"
#: Rasa's own channels that would let a caller choose another channel's conversation id.
UNSAFE: Dict[str, str] = {"rest": REST, "rasa.core.channels.rest.RestInput": REST}


def effective_credentials(settings: Settings) -> Dict[str, Any]:
    """The channel configuration the Rasa server is started with."""
    path = settings.path(settings.rasa_credentials)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must map channel names to their settings")
    credentials: Dict[str, Any] = {UNSAFE.get(str(key), str(key)): value for key, value in loaded.items()}
    if settings.env == "production" and not settings.rest_token:
        credentials.pop(REST, None)
    for channel, connector in CONNECTORS.items():
        if settings.channel_enabled(channel):
            credentials.setdefault(connector, None)
    credentials.setdefault(UPDATES, None)
    return credentials


def enabled_channels(credentials: Dict[str, Any]) -> Dict[str, str]:
    """Channel name -> key, for the start-up banner."""
    names = {connector: channel for channel, connector in
             {**CONNECTORS, "widget": WIDGET, "rest": REST, "updates": UPDATES}.items()}
    return {names.get(key, key.rsplit(".", 1)[-1]): key for key in credentials}


def write_credentials(settings: Settings, directory: Path) -> Path:
    """Write the effective credentials to `directory` (never committed) and return the file."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "credentials.yml"
    target.write_text(yaml.safe_dump(effective_credentials(settings), sort_keys=False), encoding="utf-8")
    return target
