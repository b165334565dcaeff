"""What every action shares: the latest message, the ways out of a question, failing politely, the helpdesk copy."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from abc import ABC, abstractmethod
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Set, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
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
    "ask_about_order": Job.QUESTION,
}

#: "What address is it going to?": the masked delivery address, after the same check as every job.
#: The `pending_job` value of that question (the slot keeps plain text).
SHOW_ADDRESS = "show_address"

#: Intents that always leave a question (rules in data/rules/ways_out.yml): a form reads nothing from them.
LEAVING = frozenset({"stop", "goodbye", "human_handoff", "insult"})
#: Intents that pause a question for a word about it (help, "I don't know", "no", "are you a bot?"), unless the
#: message also carries the answer ("no, it's WS-1043").
PAUSING = frozenset({"ask_help", "dont_know", "deny", "bot_challenge"})
#: Questions about the order that the rules answer in the middle of a form, and consent to updates given or
#: withdrawn there ("stop updates" while the bot asks for an email is not an email).
DIGRESSIONS = frozenset({"order_status", "delivery_delay", "ask_delivery_address", "ask_about_order",
                         "subscribe_updates", "unsubscribe_updates"})

#: "I don't know", "I don't have it", "no idea": read from the text when the model took it for something else.
_DONT_KNOW = re.compile(
    r"\b(?:i\s*(?:do\s*n[o']?t|dont|don't)\s*(?:know|have|remember|recall)|"
    r"no\s+(?:idea|clue)|not\s+a\s+clue|idk|dunno|not\s+sure|can'?t\s+(?:find|remember|recall)|"
    r"(?:lost|deleted|forgot)\s+(?:it|the|my))\b", re.I)
#: "help", "what?", "huh?", "what do you mean?": a question about the question.
_HELP = re.compile(
    r"^\s*(?:help(?:\s+me)?(?:\s+please)?|what|huh|eh|sorry|pardon|come again|say again|what do you mean|"
    r"i\s+don'?t\s+(?:understand|get\s+it|follow)|what\s+(?:is|does)\s+that(?:\s+mean)?|\?+)\s*[?!.]*\s*$",
    re.I)


def lacks_order_number(text: str) -> bool:
    """"I don't know my order number", "can't find the order number": said inside any message."""
    return bool(_DONT_KNOW.search(text) and re.search(r"\b(?:order|number)\b", text, re.I))


def reads_as(text: str) -> Optional[str]:
    """"dont_know" or "ask_help" when a short message plainly says so, whatever intent the model gave it."""
    if not text or text.startswith("/") or len(text) > 80 or re.search(r"\d|@", text):
        return None
    if _HELP.match(text):
        return "ask_help"
    if _DONT_KNOW.search(text):
        return "dont_know"
    return None


def answering(tracker: Tracker) -> bool:
    """Whether the form is reading the shopper's latest message as the answer to its question.

    Not when the form starts (the message asked for the job, the route action
    read it) nor when it comes back after a rule handled the message ("are you
    a bot?", "help"): another action then ran since the message.
    """
    form = (tracker.active_loop or {}).get("name")
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            return True
        if event.get("event") == "action" and event.get("name") not in (form, "action_listen"):
            return False
    return True


def said_since_message(tracker: Tracker, responses: Iterable[str]) -> bool:
    """Whether one of `responses` was sent since the shopper's latest message."""
    wanted = set(responses)
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            return False
        if event.get("event") == "bot" and (event.get("metadata") or {}).get("utter_action") in wanted:
            return True
    return False


def last_response(tracker: Tracker) -> Optional[str]:
    """The name of the response the bot sent last (before the shopper's latest message too)."""
    for event in reversed(tracker.events):
        if event.get("event") == "bot":
            return (event.get("metadata") or {}).get("utter_action")
    return None


#: For each question a form asks: what the shopper is told when they ask for help with it ("help"), when they
#: don't have the answer ("dont_know"), and from the second failed answer in a row ("twice").  Each of these ends
#: with what the shopper can do next, so the question itself is not asked again straight after it.
EXPLANATIONS: Dict[str, Dict[str, str]] = {
    "order_number": {"ask_help": "utter_help_order_number", "dont_know": "utter_no_order_number",
                     "twice": "utter_offer_lookup"},
    "identity_proof": {"ask_help": "utter_help_identity_proof", "dont_know": "utter_no_identity_proof",
                       "twice": "utter_proof_other_ways"},
    "lookup_email": {"ask_help": "utter_help_lookup_email", "dont_know": "utter_no_lookup_details",
                     "twice": "utter_lookup_other_ways"},
    "lookup_postcode": {"ask_help": "utter_help_lookup_postcode", "dont_know": "utter_no_lookup_details",
                        "twice": "utter_lookup_other_ways"},
    "new_street": {"ask_help": "utter_help_new_street", "dont_know": "utter_new_address_unknown",
                   "twice": "utter_address_other_ways"},
    "new_city": {"ask_help": "utter_help_new_city", "dont_know": "utter_new_address_unknown",
                 "twice": "utter_address_other_ways"},
    "new_postcode": {"ask_help": "utter_help_new_postcode", "dont_know": "utter_new_address_unknown",
                     "twice": "utter_address_other_ways"},
    "new_country": {"ask_help": "utter_help_new_country", "dont_know": "utter_new_address_unknown",
                    "twice": "utter_address_other_ways"},
    "address_confirmed": {"ask_help": "utter_help_address_confirmed", "dont_know": "utter_help_address_confirmed"},
    "claim_reason": {"ask_help": "utter_help_claim_reason", "dont_know": "utter_help_claim_reason",
                     "twice": "utter_offer_human"},
    "delivery_checked": {"ask_help": "utter_help_delivery_checked", "dont_know": "utter_help_delivery_checked",
                         "twice": "utter_claim_other_ways"},
    "resolution_choice": {"ask_help": "utter_help_resolution_choice", "dont_know": "utter_help_resolution_choice",
                          "twice": "utter_claim_other_ways"},
}

#: The offers to find the order with the email address and postcode: a "yes" to them starts the lookup.
LOOKUP_OFFERS = ("utter_no_order_number", "utter_offer_lookup")

#: After one of these the form does not ask its question again in the same turn: they already say what to do.
ANSWERED_FOR_THE_QUESTION = frozenset(
    {name for wording in EXPLANATIONS.values() for name in wording.values()}
    | {"utter_lookup_found", "utter_lookup_unavailable", "utter_no_lookup"})


def explain(dispatcher: CollectingDispatcher, tracker: Tracker, kind: str) -> Dict[str, Any]:
    """Help with the question being asked ("ask_help") or a way on without its answer ("dont_know").

    Counts as a failed answer to that question.
    """
    asked = tracker.get_slot("requested_slot") or ""
    wording = EXPLANATIONS.get(asked, {})
    response = wording.get(kind) or wording.get("ask_help")
    if response:
        dispatcher.utter_message(response=response)
    return {"failed_answers": failed_answers(tracker) + 1}


def missed(dispatcher: CollectingDispatcher, tracker: Tracker, slot: str, response: str,
           **wording: Any) -> Dict[str, Any]:
    """An answer that does not fit the question: say why, and from the second in a row offer another way."""
    count = failed_answers(tracker) + 1
    dispatcher.utter_message(response=response, **wording)
    twice = EXPLANATIONS.get(slot, {}).get("twice")
    if count >= 2 and twice:
        dispatcher.utter_message(response=twice)
    return {slot: None, "failed_answers": count}


def failed_answers(tracker: Tracker) -> int:
    """Failed answers in a row to the question being asked (the `failed_answers` slot)."""
    try:
        return int(tracker.get_slot("failed_answers") or 0)
    except (TypeError, ValueError):
        return 0


class AskQuestion(Action, ABC):
    """Asks for a form's slot, unless this turn already told the shopper what to do about it.

    Rasa runs `action_ask_<slot>` before `utter_ask_<slot>`; after an
    explanation or an offer of another way the question is not repeated.
    """

    @property
    @abstractmethod
    def slot(self) -> str:
        """The slot this action asks for."""

    def name(self) -> Text:
        return f"action_ask_{self.slot}"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        if not said_since_message(tracker, ANSWERED_FOR_THE_QUESTION):
            dispatcher.utter_message(response=f"utter_ask_{self.slot}")
        return []


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
