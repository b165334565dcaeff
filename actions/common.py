"""What every action shares: reading the latest message, the transcript, failing politely, the helpdesk copy."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set

from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.context import context
from bot.config import Settings
from bot.domain.enums import HandoffReason, Job
from bot.services.handoff import record_helpdesk_status
from bot.services.handoff import transcript as conversation_lines
from bot.services.helpdesk import post_handoff
from bot.services.verification import is_verified

logger = logging.getLogger(__name__)

#: The intent that asks for each job.
JOBS = {
    "order_status": Job.STATUS,
    "delivery_delay": Job.DELAY,
    "change_address": Job.ADDRESS,
    "refund_or_reship": Job.CLAIM,
}


def still_verified(session: Session, conversation_id: str, number: Optional[str]) -> bool:
    """Whether the store holds a live verification of `number` for this conversation (and keep it alive).

    The `verified_order` slot only says which order the conversation is about:
    whoever can write to a tracker can set it, so every action that reveals or
    changes an order asks the store.
    """
    if not number:
        return False
    ctx = context()
    return is_verified(session=session, conversation_id=conversation_id, order_number=number, now=ctx.now(),
                       ttl_minutes=ctx.settings.verification_ttl_minutes)


async def proven_order(tracker: Tracker) -> Optional[str]:
    """The `verified_order` slot's order if the store confirms it for this conversation, else None."""
    number = tracker.get_slot("verified_order")
    if not number:
        return None
    proven = await context().store(lambda session: still_verified(session, tracker.sender_id, number))
    return number if proven else None


#: What forgets an order that is no longer proven, so the next question asks for proof again.
UNPROVEN = [SlotSet("verified_order", None), SlotSet("identity_proof", None)]


def latest_text(tracker: Tracker) -> str:
    return tracker.latest_message.get("text") or ""


def latest_intent(tracker: Tracker) -> str:
    return (tracker.latest_message.get("intent") or {}).get("name") or ""


def entity(tracker: Tracker, name: str) -> Optional[str]:
    value = next(tracker.get_latest_entity_values(name), None)
    return str(value) if value is not None else None


def transcript(tracker: Tracker) -> List[Dict[str, Any]]:
    """The conversation so far, as the handoff record and the helpdesk keep it."""
    return conversation_lines(tracker.events, limit=200)


Run = Callable[..., Awaitable[List[Dict[str, Any]]]]


def polite_failure(run: Run) -> Run:
    """A store or policy failure ends in an apology and an offer of a person, never silence."""

    @functools.wraps(run)
    async def wrapper(self: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]):
        try:
            return await run(self, dispatcher, tracker, domain)
        except Exception:  # noqa: BLE001 - the shopper must always get an answer
            logger.exception("action %s failed for %s", self.name(), tracker.sender_id)
            dispatcher.utter_message(response="utter_sorry_error")
            dispatcher.utter_message(response="utter_offer_human")
            return [SlotSet("handoff_reason", HandoffReason.ERROR.value)]

    return wrapper


#: Helpdesk posts under way; held so that they are not dropped before they finish.
_HELPDESK_TASKS: Set[asyncio.Task[None]] = set()


def send_to_helpdesk(payload: Dict[str, Any], config: Settings) -> None:
    """Post a new handoff to the external helpdesk in the background and record the outcome."""

    async def deliver() -> None:
        try:
            await post_handoff(url=config.helpdesk_url, secret=config.helpdesk_secret, payload=payload)
            status, detail = "sent", None
        except Exception as exc:  # noqa: BLE001 - the handoff is stored; the copy is best effort
            logger.error("helpdesk copy of handoff %s failed: %s", payload["handoff_id"], exc)
            status, detail = "failed", f"{exc.__class__.__name__}: {exc}"[:500]

        try:
            await context().store(lambda session: record_helpdesk_status(
                session=session, handoff_id=payload["handoff_id"], status=status, detail=detail))
        except Exception:  # noqa: BLE001 - nothing else depends on this status
            logger.exception("could not record the helpdesk status of handoff %s", payload["handoff_id"])

    task = asyncio.get_running_loop().create_task(deliver())
    _HELPDESK_TASKS.add(task)
    task.add_done_callback(_HELPDESK_TASKS.discard)
