"""The action server, as the Rasa server alone may call it.

rasa-sdk's server answers anyone who can reach its port and runs whatever
tracker it is sent, so a made-up tracker with a `verified_order` slot was
enough to read an order.  This starts the same server (rasa-sdk's
`create_app` with the `actions` package) with one addition: every request but
`/health` must carry `Authorization: Bearer <ACTION_SERVER_TOKEN>`, compared in
constant time, or it gets 401 and nothing runs.  The Rasa server sends the
header from `endpoints.yml`; a web page cannot, because a browser must ask
before sending an Authorization header cross-site, and nobody allows it.

Run as ``python -m bot.serving.action_server`` (`python -m bot run` does).
"""

from __future__ import annotations

import hmac
import logging
from typing import Optional

from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.config import SettingsError, get_settings
from bot.domain import redaction

logger = logging.getLogger(__name__)

#: What the server answers without authentication: load balancers and the runner poll it.
OPEN_PATHS = frozenset({"/health"})


def authorised(header: Optional[str], token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer token (constant-time comparison)."""
    if not token or not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def create_app(token: str, actions_package: str = "actions") -> Sanic:
    """rasa-sdk's action server for `actions_package`, refusing every call without `token`."""
    from rasa_sdk.endpoint import create_app as sdk_app

    if not token:
        raise SettingsError("ACTION_SERVER_TOKEN is empty: run `python -m bot setup`, which writes one to .env.")
    app = sdk_app(actions_package, cors_origins=None, auto_reload=False)

    @app.middleware("request")
    async def require_token(request: Request) -> Optional[HTTPResponse]:
        if request.path in OPEN_PATHS:
            if request.method not in ("GET", "HEAD"):
                return response.json({"error": "only GET"}, status=405)
            return None
        if authorised(request.headers.get("authorization"), token):
            return None
        logger.warning("action server: refused %s %s without the action server token", request.method,
                       request.path)
        return response.json({"error": "the action server token is missing or wrong"}, status=401)

    return app


def main() -> None:
    """Serve on ACTION_HOST:ACTION_PORT until stopped."""
    from rasa_sdk import utils

    redaction.install()  # before anything logs: emails, phone numbers and conversation ids are masked
    logging.getLogger("matplotlib").setLevel(logging.WARN)
    utils.configure_colored_logging("INFO")
    utils.update_sanic_log_level()
    settings = get_settings()
    app = create_app(settings.action_server_token)
    logger.info("Action server on http://%s:%s (calls need the action server token)", settings.action_host,
                settings.action_port)
    app.run(settings.action_host, settings.action_port, workers=1, access_log=False)


if __name__ == "__main__":
    main()
