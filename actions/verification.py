"""Which job the shopper wants, and proving who they are before anything is said."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import JOBS, entity, latest_intent, latest_text, polite_failure, proven_order
from actions.context import context
from bot.domain.enums import ClaimReason, HandoffReason, Job, VerifyResult
from bot.domain.parsing import (
    TRACKING,
    find_details,
    find_email,
    find_order_number,
    find_postcode,
    find_tracking_number,
)
from bot.services.verification import verify

logger = logging.getLogger(__name__)


class ActionRouteJob(Action):
    """Notes which job the shopper wants and the details their message gives.

    The verify form runs next: it asks nothing when the order is already
    verified in this conversation, and otherwise collects and checks the proof.
    """

    def name(self) -> Text:
        return "action_route_job"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        events: List[EventType] = []
        job = JOBS.get(latest_intent(tracker)) or tracker.get_slot("pending_job") or Job.STATUS
        events.append(SlotSet("pending_job", str(job)))
        reason = entity(tracker, "claim_reason")
        if reason in ClaimReason.values():
            events.append(SlotSet("claim_reason", reason))
        text = latest_text(tracker) if not latest_text(tracker).startswith("/") else ""
        details = find_details(text, context().settings.order_number_prefix, loose=True)
        reference = details.order_number or details.tracking_number
        claimed = tracker.get_slot("verified_order")
        verified = await proven_order(tracker)  # the store decides, not the slot
        if verified and (reference is None or reference == verified):
            return events  # the verify form finds nothing to ask and the job goes on
        if claimed and not verified and reference in (None, claimed):
            dispatcher.utter_message(response="utter_check_again")  # lapsed, or a new session
        # A new or unverified order: collect what this message already says, ask for the rest.
        # A second question while the check is under way ("why is it late?" before the
        # proof came) keeps the order number already given: nothing is verified by it.
        if reference is None and not verified:
            reference = tracker.get_slot("order_number") or claimed or None
        events += [SlotSet("verified_order", None), SlotSet("identity_proof", None),
                   SlotSet("order_number", reference)]
        proof = details.email or details.postcode
        if reference and proof:
            events.append(SlotSet("identity_proof", proof))
        return events


class ValidateVerifyForm(FormValidationAction):
    """Reads the order number and proof from free text, then checks them against the store."""

    def name(self) -> Text:
        return "validate_verify_form"

    async def required_slots(self, domain_slots: List[Text], dispatcher: CollectingDispatcher, tracker: Tracker,
                             domain: Dict[Text, Any]) -> List[Text]:
        if tracker.get_slot("locked_out") or tracker.get_slot("verified_order"):
            return []
        return domain_slots

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        try:
            return await super().run(dispatcher, tracker, domain)
        except Exception:  # noqa: BLE001 - never a silent turn
            logger.exception("verification failed for %s", tracker.sender_id)
            dispatcher.utter_message(response="utter_sorry_error")
            dispatcher.utter_message(response="utter_offer_human")
            return [SlotSet("requested_slot", None), SlotSet("order_number", None), SlotSet("identity_proof", None),
                    SlotSet("handoff_reason", HandoffReason.ERROR.value)]

    def _text(self, tracker: Tracker) -> str:
        text = latest_text(tracker)
        return "" if text.startswith("/") else text

    async def extract_order_number(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                   domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = self._text(tracker)
        asked = tracker.get_slot("requested_slot") == "order_number"
        prefix = context().settings.order_number_prefix
        found = find_order_number(text, prefix, bare_ok=asked) or find_tracking_number(text)
        if found:
            return {"order_number": found}
        if asked and text.strip() and latest_intent(tracker) not in JOBS:
            return {"order_number": ""}  # something was typed but it is no order number: say so
        return {}

    async def extract_identity_proof(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                     domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = self._text(tracker)
        email = find_email(text)
        if email:
            return {"identity_proof": email}
        if tracker.get_slot("requested_slot") == "identity_proof":
            # The digits of an order number written as one ("where is WS-1004?") are not a postcode.
            number = find_order_number(text, context().settings.order_number_prefix)
            postcode = find_postcode(text, exclude=number)
            if postcode:
                return {"identity_proof": postcode}
            if text.strip() and latest_intent(tracker) not in JOBS:
                return {"identity_proof": ""}
            return {}
        # Asked for the order number, the shopper may give the postcode with it
        # ("it's 1043, postcode 1015 CW"), as they may in their first message.
        details = find_details(text, context().settings.order_number_prefix, loose=True)
        if (details.order_number or details.tracking_number) and details.postcode:
            return {"identity_proof": details.postcode}
        return {}

    async def validate_order_number(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                              domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if slot_value is None:
            return {"order_number": None}
        if not slot_value:
            dispatcher.utter_message(response="utter_invalid_order_number")
            return {"order_number": None}
        result: Dict[Text, Any] = {"order_number": slot_value}
        proof = tracker.get_slot("identity_proof")
        if proof and "identity_proof" not in tracker.slots_to_validate():  # the proof came first: check now
            result.update(await self._check(dispatcher, tracker, slot_value, proof))
        return result

    async def validate_identity_proof(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if slot_value is None:
            return {"identity_proof": None}
        if not slot_value:
            dispatcher.utter_message(response="utter_invalid_proof")
            return {"identity_proof": None}
        reference = tracker.get_slot("order_number")
        if not reference:
            return {"identity_proof": slot_value}
        return await self._check(dispatcher, tracker, reference, slot_value)

    async def _check(self, dispatcher: CollectingDispatcher, tracker: Tracker, reference: str,
               proof: str) -> Dict[Text, Any]:
        ctx = context()
        is_tracking = bool(TRACKING.fullmatch(reference))
        email = proof if "@" in proof else None
        outcome = await ctx.store(lambda session: verify(
            session=session, conversation_id=tracker.sender_id, order_number=None if is_tracking else reference,
            tracking_number=reference if is_tracking else None, email=email, postcode=None if email else proof,
            policy=ctx.settings.policy, now=ctx.now()))
        if outcome.result == VerifyResult.VERIFIED:
            dispatcher.utter_message(response="utter_verified")
            return {"order_number": reference, "identity_proof": proof, "verified_order": outcome.order_number}
        if outcome.result in (VerifyResult.LOCKED, VerifyResult.EMAIL_PAUSED):
            dispatcher.utter_message(response="utter_locked_out" if outcome.result == VerifyResult.LOCKED
                                     else "utter_proof_email_paused")
            return {"locked_out": True, "order_number": None, "identity_proof": None, "requested_slot": None}
        if outcome.result == VerifyResult.POSTCODE_PAUSED:
            dispatcher.utter_message(response="utter_proof_need_email")
            return {"identity_proof": None}
        dispatcher.utter_message(response="utter_proof_mismatch")
        return {"order_number": None, "identity_proof": None}

