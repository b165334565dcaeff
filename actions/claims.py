"""Refund or replacement: the shopper's choice, recorded once."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.common import (
    DIGRESSIONS,
    LEAVING,
    PAUSING,
    AskQuestion,
    answering,
    entity,
    explain,
    latest_intent,
    latest_text,
    missed,
    polite_failure,
    reads_as,
    still_verified,
)
from actions.context import context
from actions.jobs import ClaimDecision, Reply, claim_decision
from bot.domain.enums import ClaimOutcome, ClaimReason, ResolutionKind
from bot.domain.questions import claim_reason_in, resolution_in, says_checked
from bot.services import claims
from bot.store.queries import get_order


class ValidateClaimForm(FormValidationAction):
    """The shopper's choice of a refund or a replacement, from words or a button.

    Ways out ("stop", "a person", "help", "I don't know") are left to the
    rules; anything else that names neither is a failed answer.
    """

    def name(self) -> Text:
        return "validate_claim_form"

    async def extract_claim_reason(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                   domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") != "claim_reason" or not answering(tracker):
            return {}
        text, intent = latest_text(tracker), latest_intent(tracker)
        value = entity(tracker, "claim_reason")
        if value not in ClaimReason.values():
            value = claim_reason_in(text)
        if value in ClaimReason.values():
            return {"claim_reason": value}
        if intent in LEAVING | PAUSING | DIGRESSIONS or text.startswith("/") or not text.strip():
            return {}
        return {"claim_reason": ""}

    async def validate_claim_reason(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared when the form starts; the form asks
            return {}
        if tracker.get_slot("requested_slot") != "claim_reason" or not answering(tracker):
            return {}  # given with the request: action_continue_job has decided it already
        if value not in ClaimReason.values():
            return missed(dispatcher, tracker, "claim_reason", "utter_invalid_claim_reason")
        number = tracker.get_slot("verified_order") or ""

        def decide(session: Session) -> Optional[ClaimDecision]:
            if not still_verified(session, tracker.sender_id, number):
                return None
            order = get_order(session=session, number=number)
            return claim_decision(session, order, value, offer_person=True) if order is not None else None

        outcome = await context().store(decide)
        if outcome is None:
            reply = Reply.unproven()
            reply.send(dispatcher)
            return {**{e["name"]: e["value"] for e in reply.events}, "claim_reason": None, "requested_slot": None}
        for message in outcome.messages:
            dispatcher.utter_message(**message)
        slots = {e["name"]: e["value"] for e in outcome.events if e.get("event") == "slot"}
        if outcome.eligible:
            return {**slots, "failed_answers": 0}
        return {**slots, "claim_reason": None, "requested_slot": None}

    async def extract_delivery_checked(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                       domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") != "delivery_checked" or not answering(tracker):
            return {}
        text, intent = latest_text(tracker), latest_intent(tracker)
        checked = says_checked(text)
        if checked is False:
            return {"delivery_checked": False}
        if checked or intent == "affirm" or claim_reason_in(text) == ClaimReason.NOT_RECEIVED:
            return {"delivery_checked": True}  # "yes", "I looked everywhere", "it's not there"
        if intent in LEAVING | PAUSING | DIGRESSIONS or text.startswith("/") or not text.strip():
            return {}
        return {"delivery_checked": ""}

    def validate_delivery_checked(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                  domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # set when the claim started; the form asks
            return {}
        if value is True:
            return {"delivery_checked": True, "failed_answers": 0}
        if value is False:
            dispatcher.utter_message(response="utter_look_first")
            return {"delivery_checked": None, "resolution_choice": None, "claim_reason": None,
                    "requested_slot": None}
        return missed(dispatcher, tracker, "delivery_checked", "utter_invalid_delivery_checked")

    async def extract_resolution_choice(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                        domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") != "resolution_choice" or not answering(tracker):
            return {}
        text = latest_text(tracker)
        value = entity(tracker, "resolution_choice") or resolution_in(text)
        if value:
            return {"resolution_choice": value}
        intent = latest_intent(tracker)
        if intent in LEAVING | PAUSING | DIGRESSIONS or text.startswith("/") or not text.strip():
            return {}
        return {"resolution_choice": ""}

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        text = latest_text(tracker)
        kind = reads_as(text) or ("ask_help" if text.rstrip().endswith("?") else None)  # "what's the difference?"
        if tracker.get_slot("requested_slot") == "resolution_choice" and answering(tracker) \
                and latest_intent(tracker) not in LEAVING | PAUSING | DIGRESSIONS \
                and kind and not resolution_in(text) and not entity(tracker, "resolution_choice"):
            result = explain(dispatcher, tracker, kind)
            return [SlotSet(k, v) for k, v in result.items()] + [SlotSet("requested_slot", "resolution_choice")]
        return await super().run(dispatcher, tracker, domain)

    def validate_resolution_choice(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                   domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared when the form starts; the form asks
            return {}
        if value in (ResolutionKind.REFUND, ResolutionKind.RESHIP):
            return {"resolution_choice": value, "failed_answers": 0}
        return missed(dispatcher, tracker, "resolution_choice", "utter_invalid_resolution_choice")


class ActionAskResolutionChoice(AskQuestion):
    slot = "resolution_choice"


class ActionAskClaimReason(AskQuestion):
    slot = "claim_reason"


class ActionAskDeliveryChecked(AskQuestion):
    slot = "delivery_checked"


class ActionClaimStopped(Action):
    """"No" in the claim: "I'll look first" when asked about the neighbours, else nothing is booked."""

    def name(self) -> Text:
        return "action_claim_stopped"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        asked = next((e.get("value") for e in reversed(tracker.events)
                      if e.get("event") == "slot" and e.get("name") == "requested_slot" and e.get("value")), None)
        dispatcher.utter_message(response="utter_look_first" if asked == "delivery_checked" else "utter_claim_stopped")
        return [SlotSet("delivery_checked", None), SlotSet("claim_reason", None), SlotSet("resolution_choice", None)]


class ActionSubmitClaim(Action):
    """Checks eligibility again (the parcel may have moved) and records the resolution once."""

    def name(self) -> Text:
        return "action_submit_claim"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        reset = [SlotSet("resolution_choice", None), SlotSet("claim_reason", None), SlotSet("delivery_checked", None)]
        number, reason = tracker.get_slot("verified_order"), tracker.get_slot("claim_reason")
        kind = tracker.get_slot("resolution_choice")
        if not (number and reason and kind and tracker.get_slot("delivery_checked")):
            return reset
        ctx = context()

        def settle(session: Session) -> Reply:
            if not still_verified(session, tracker.sender_id, number):
                return Reply.unproven()
            order = get_order(session=session, number=number)
            if order is None:
                raise LookupError(f"verified order {number} disappeared")
            decision = claims.decide(session=session, order=order, reason=reason, settings=ctx.settings, now=ctx.now())
            if decision.outcome != ClaimOutcome.ELIGIBLE or decision.parcel is None:
                return Reply().say(decision.response, **decision.wording)
            resolution = claims.record_resolution(session=session, order=order, parcel=decision.parcel,
                                                  reason=reason, kind=kind, conversation_id=tracker.sender_id)
            response, wording = claims.next_steps(resolution, order.number)
            return Reply().say(response, **wording).say("utter_anything_else")

        reply = await ctx.store(settle)
        reply.send(dispatcher)
        return reset + reply.events
