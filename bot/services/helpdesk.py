"""Copy each new handoff to an external helpdesk (optional): signed JSON over HTTP.

The receiver checks `X-Wismo-Signature: sha256=<hex>`, the HMAC-SHA256 of the
raw body with HELPDESK_SECRET; the body carries `sent_at`, so a replayed old
request can be told apart.  Failures are retried and then recorded on the
handoff; the handoff itself is stored before anything is sent, so a helpdesk
outage never loses it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any, Dict

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from bot.domain.clock import utcnow

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Wismo-Signature"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _worth_retrying(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code == 429 or error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)


async def post_handoff(*, url: str, secret: str, payload: Dict[str, Any], attempts: int = 4,
                       max_wait: float = 8.0) -> None:
    """POST `payload` to the helpdesk, retrying 429, 5xx and network errors.

    Raises:
        httpx.HTTPError: when the helpdesk refused it or stayed unreachable.
    """
    body = json.dumps({**payload, "sent_at": utcnow().isoformat()},
                      default=str, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)}
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        async for attempt in AsyncRetrying(stop=stop_after_attempt(attempts),
                                           wait=wait_exponential(multiplier=0.5, max=max_wait),
                                           retry=retry_if_exception(_worth_retrying), reraise=True):
            with attempt:
                response = await client.post(url, content=body, headers=headers)
                response.raise_for_status()
