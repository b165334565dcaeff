"""Signing bodies as Meta signs its webhooks (and as the helpdesk copy is signed)."""

from __future__ import annotations

import hashlib
import hmac


def signature(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value for `body`: "sha256=" and the hex HMAC-SHA256 of the body under `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
