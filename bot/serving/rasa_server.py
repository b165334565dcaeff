"""The Rasa server as `python -m bot run` starts it: Rasa's own CLI, with the API token kept off the command line.

``python -m bot.serving.rasa_server run --model ... --enable-api`` runs
``rasa run ...`` in this process and adds ``--auth-token`` from
RASA_AUTH_TOKEN (the environment or `.env`), so the token never appears in
`ps`, in the process table of another user, or in the runner's output.  It is
also the one place to change how the Rasa server itself behaves: here every
log record of the process has emails, phone numbers, widget session ids and
conversation ids masked (`bot.domain.redaction`), and Rasa runs with the
changes `bot.serving.rasa_patches` lists (each one removes a measured cost and
keeps Rasa's behaviour).
"""

from __future__ import annotations

import sys
from typing import List, Optional

from bot.config import SettingsError, get_settings
from bot.domain import redaction


def rasa_argv(args: List[str], token: str) -> List[str]:
    """Rasa's command line: `args` with the API token added."""
    if not token:
        raise SettingsError("RASA_AUTH_TOKEN is empty: run `python -m bot setup`, which writes one to .env.")
    return ["rasa", *args, "--auth-token", token]


def main(argv: Optional[List[str]] = None) -> None:
    """Run Rasa's CLI in this process with the token from the settings; its log lines are redacted."""
    redaction.install()  # before Rasa imports and configures anything: its records pass through it too
    from rasa.__main__ import main as rasa_main

    from bot.serving import rasa_patches

    rasa_patches.install()

    sys.argv = rasa_argv(list(sys.argv[1:] if argv is None else argv), get_settings().rasa_auth_token)
    rasa_main()


if __name__ == "__main__":
    main()
