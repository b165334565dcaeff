"""Which job the shopper wants, and proving who they are before anything is said."""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import (
    DIGRESSIONS,
    EXPLANATIONS,
    JOBS,
    LEAVING,
    LOOKUP_OFFERS,
    PAUSING,
    SHOW_ADDRESS,
    AskQuestion,
    answering,
    entity,
    explain,
    failed_answers,
    lacks_order_number,
    last_response,
    latest_intent,
    latest_text,
    missed,
    polite_failure,
    proven_order,
    reads_as,
)
from actions.context import context
from actions.handoff import ActionAffirm
from bot.domain.enums import ClaimReason, HandoffReason, Job, VerifyResult
from bot.domain.parsing import (
    TRACKING,
    Details,
    find_details,
    find_email,
    find_order_number,
    find_postcode,
    find_tracking_number,
)
from bot.domain.questions import Topic, claim_reason_in, questions, says_checked, topics
from bot.domain.updates import wants_updates
from bot.services import address
from bot.services.verification import choice_line, look_up, verify

logger = logging.getLogger(__name__)

#: Intents that ask about an order or its address: the form reads no answer from them, the rules route them.
ROUTED = frozenset(JOBS) | DIGRESSIONS | {"lookup_order"}
#: "wrong number, it's 1004", "my order number is 1004": the digits that follow are an order number.
CORRECTION = re.compile(r"\bwrong\s+(?:order\s+)?(?:number|no|nr|one|order)\b|"
                        r"\border\s+(?:number|no|nr)\.?\s+(?:is\s+)?#?\d", re.I)
#: Intents under which "what address is it going to?" is that question, not a job of their own.
ASKS_ADDRESS = frozenset({"change_address", "order_status", "inform", "ask_about_order"})
#: The slots of the lookup, cleared whenever a new check starts.
LOOKUP_SLOTS = ("order_lookup", "lookup_email", "lookup_postcode")
#: How sure the model must be of a job behind a greeting ("hi, my parcel is late, WS-1008") to take it.
GREETING_JOB_CONFIDENCE = 0.2


def _typed(tracker: Tracker) -> str:
    """The shopper's latest message as typed; empty for a button's `/intent` payload, which carries no details."""
    text = latest_text(tracker)
    return "" if text.startswith("/") else text


async def route(dispatcher: CollectingDispatcher, tracker: Tracker, job: str,
                checking: bool = False) -> List[EventType]:
    """Notes the job and the details the shopper's message gives; the verify form asks for the rest.

    The form asks nothing when the order is already verified in this
    conversation; otherwise it collects and checks the proof.  A new address in
    an address-change request starts the address form with it.  The postcode of
    an address is a proof only of a shopper not yet verified asking about their
    order ("where's WS-1043? I live at ..., 1015 CW Amsterdam"); in a change
    request, or once verified, it is part of the address.  `checking`: the
    check is under way, so a proof already given is kept.
    """
    text = _typed(tracker)
    details = find_details(text, context().settings.order_number_prefix, loose=True)
    events: List[EventType] = [SlotSet("pending_job", str(job)),
                               SlotSet("order_question", text if questions(text, context().today()) else None),
                               SlotSet("after_check", "show_address" if job == SHOW_ADDRESS else "job"),
                               SlotSet("failed_answers", 0)] + [SlotSet(slot, None) for slot in LOOKUP_SLOTS]
    if wants_updates(text) is True or latest_intent(tracker) == "subscribe_updates":
        # "can you keep me posted about WS-1008? jane@x.com": once it is verified, consent without asking again.
        events.append(SlotSet("updates_wanted", True))
    new = address.address_in_request(text)
    if job == Job.ADDRESS:
        events.append(SlotSet("address_in_request", address.one_line(new) if new else None))
    reason = entity(tracker, "claim_reason")
    if reason not in ClaimReason.values():  # a word the model marked that is no reason ("delivered")
        reason = claim_reason_in(text) if job == Job.CLAIM else None
        if reason is None and job == Job.CLAIM and says_checked(text):
            reason = ClaimReason.NOT_RECEIVED.value  # "I've asked all my neighbours": it never came
    if reason in ClaimReason.values():
        events.append(SlotSet("claim_reason", reason))
    reference = details.order_number or details.tracking_number
    claimed = tracker.get_slot("verified_order")
    verified = await proven_order(tracker)  # the store decides, not the slot
    postcode = None if new.postcode and (job == Job.ADDRESS or verified) else details.postcode
    if verified and (reference is None or reference == verified):
        return events  # the verify form finds nothing to ask and the job goes on
    if claimed and not verified and reference in (None, claimed):
        dispatcher.utter_message(response="utter_check_again")  # lapsed, or a new session
    # A new or unverified order: collect what this message already says, ask for the rest.
    # A second question while the check is under way ("why is it late?" before the
    # proof came) keeps the order number already given: nothing is verified by it.
    if reference is None and not verified:
        reference = tracker.get_slot("order_number") or claimed or None
    if not reference and not checking and lacks_order_number(text) and latest_intent(tracker) != "lookup_order" \
            and not (details.email and postcode):
        # "I don't know my order number, where's my parcel?": the other ways, not the question they can't answer.
        dispatcher.utter_message(response="utter_no_order_number")
    proof = details.email or postcode or (tracker.get_slot("identity_proof") if checking else None)
    events += [SlotSet("verified_order", None), SlotSet("identity_proof", proof), SlotSet("order_number", reference)]
    if not reference and (latest_intent(tracker) == "lookup_order" or (details.email and postcode)):
        events += [SlotSet("order_lookup", True), SlotSet("lookup_email", details.email),
                   SlotSet("lookup_postcode", postcode)]
    return events


class ActionRouteJob(Action):
    """Notes which job the shopper wants and the details their message gives."""

    def name(self) -> Text:
        return "action_route_job"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        intent = latest_intent(tracker)
        if intent == "affirm" and last_response(tracker) != "utter_offer_address_change":
            return await ActionAffirm().run(dispatcher, tracker, domain)  # "yes" to the offer of a person
        text = _typed(tracker)
        asked = tracker.get_slot("requested_slot")
        checking = (tracker.active_loop or {}).get("name") == "verify_form" and asked in EXPLANATIONS
        if checking and reads_as(text) and not _details(text):
            # "I don't have it" taken for a claim, say: it answers the question being asked.
            return [SlotSet(k, v) for k, v in explain(dispatcher, tracker, reads_as(text) or "").items()]
        job = JOBS.get(intent) or tracker.get_slot("pending_job") or Job.STATUS
        if intent == "ask_delivery_address" or (intent in ASKS_ADDRESS and address.asks_current_address(text)):
            job = SHOW_ADDRESS
        elif intent == "lookup_order":
            job = tracker.get_slot("pending_job") or Job.STATUS
        elif intent == "affirm" and last_response(tracker) == "utter_offer_address_change":
            job = Job.ADDRESS  # "yes" to changing the address just shown
        elif job in (Job.STATUS, Job.DELAY) and says_checked(text) is True and claim_reason_in(text) in (
                None, ClaimReason.NOT_RECEIVED) and intent != "ask_about_order":
            job = Job.CLAIM  # "I've asked all my neighbours and checked everywhere": it never came
        elif Topic.REDIRECT in topics(text, context().today()):
            job = Job.QUESTION  # "did my address change go through?" asks, it changes nothing
        elif intent != "refund_or_reship" and address.asks_for_change(text) and address.address_in_request(text):
            job = Job.ADDRESS  # "please change the address of WS-1043 to Kastanienallee 12, 10435 Berlin"
        events = await route(dispatcher, tracker, job, checking=checking)
        if checking and intent != "lookup_order" and not _details(text):
            # Asked for the order number, the shopper asks about the order again ("the one from last
            # week?"): no answer to the question, and from the second, another way is offered.
            count = failed_answers(tracker) + 1
            events.append(SlotSet("failed_answers", count))
            twice = EXPLANATIONS[asked or ""].get("twice")
            if count >= 2 and twice:
                dispatcher.utter_message(response=twice)
        return events


def _details(text: str) -> Optional[Details]:
    """The order number, tracking number, email and postcode in `text`; None when it names none of them."""
    found = find_details(text, context().settings.order_number_prefix, loose=True)
    return found if any((found.order_number, found.tracking_number, found.email, found.postcode)) else None


class ActionGreet(Action):
    """Greets back; a greeting that already names an order ("hi, where's WS-1003?") goes straight to it."""

    def name(self) -> Text:
        return "action_greet"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        details = find_details(_typed(tracker), context().settings.order_number_prefix, loose=True)
        if not (details.order_number or details.tracking_number or details.email):
            dispatcher.utter_message(response="utter_greet")
            return [SlotSet("next_form", "none")]
        return await route(dispatcher, tracker, _job_behind_greeting(tracker)) + [SlotSet("next_form", "verify_form")]


def _job_behind_greeting(tracker: Tracker) -> str:
    """The job a greeting also asks for, when the model saw one ("hi, my parcel is late"); else the status."""
    for ranked in tracker.latest_message.get("intent_ranking") or []:
        if ranked.get("name") in JOBS and (ranked.get("confidence") or 0) >= GREETING_JOB_CONFIDENCE:
            return str(JOBS[ranked["name"]])
    return str(Job.STATUS)


class ValidateVerifyForm(FormValidationAction):
    """Reads the order number and proof from free text, then checks them against the store.

    A shopper without the order number gives the email address and the
    delivery postcode instead: the orders that match both are listed, and the
    one they choose is checked with that email.  Ways out of the questions
    ("stop", "a person", "help", "I don't know") are left to the rules.
    """

    def name(self) -> Text:
        return "validate_verify_form"

    async def required_slots(self, domain_slots: List[Text], dispatcher: CollectingDispatcher, tracker: Tracker,
                             domain: Dict[Text, Any]) -> List[Text]:
        if tracker.get_slot("locked_out") or tracker.get_slot("verified_order"):
            return []
        if tracker.get_slot("order_lookup") and not tracker.get_slot("order_number"):
            return ["lookup_email", "lookup_postcode", "order_number", "identity_proof"]
        return ["order_number", "identity_proof"]

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        try:
            early = self._way_out_in_words(dispatcher, tracker)
            if early is not None:
                return early
            started = self._lookup_started(tracker)
            tracker.slots.update({event["name"]: event["value"] for event in started})
            return started + await super().run(dispatcher, tracker, domain)
        except Exception:  # noqa: BLE001 - never a silent turn
            logger.exception("verification failed for %s", tracker.sender_id)
            dispatcher.utter_message(response="utter_sorry_error")
            dispatcher.utter_message(response="utter_offer_human")
            return [SlotSet("requested_slot", None), SlotSet("order_number", None), SlotSet("identity_proof", None),
                    SlotSet("handoff_reason", HandoffReason.ERROR.value)]

    def _way_out_in_words(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> Optional[List[EventType]]:
        """"I don't have it" or "what?" that the model read as something else: help with the question, ask on."""
        asked = tracker.get_slot("requested_slot")
        text = self._answer(tracker)
        if not text or asked not in EXPLANATIONS or latest_intent(tracker) in LEAVING | PAUSING:
            return None
        kind = reads_as(text)
        if kind is None or _details(text):
            return None
        result = explain(dispatcher, tracker, kind)
        return [SlotSet(k, v) for k, v in result.items()] + [SlotSet("requested_slot", asked)]

    def _lookup_started(self, tracker: Tracker) -> List[EventType]:
        """Events that switch to finding the order by email and postcode, when the shopper asks for that."""
        if tracker.get_slot("order_lookup") or tracker.get_slot("requested_slot") != "order_number":
            return []
        text, intent = self._answer(tracker), latest_intent(tracker)
        if text is None:
            return []
        offered = last_response(tracker) in LOOKUP_OFFERS
        wants = intent == "lookup_order" or (intent == "affirm" and offered)
        # "I don't have it, but my email is jane@example.com", or the email right after the offer:
        # straight on with what they gave
        details = _details(text)
        without_number = details is not None and not (details.order_number or details.tracking_number) \
            and (offered or intent == "dont_know" or reads_as(text) == "dont_know")
        if not (wants or without_number):
            return []
        proof = tracker.get_slot("identity_proof") or ""
        email = proof if "@" in proof else None
        postcode = proof if proof and not email else None
        return [SlotSet("order_lookup", True), SlotSet("failed_answers", 0),
                SlotSet("lookup_email", email), SlotSet("lookup_postcode", postcode)]

    def _answer(self, tracker: Tracker) -> Optional[str]:
        """The shopper's message as the answer to the form's question; None when it is not one (see `answering`)."""
        return _typed(tracker) if answering(tracker) else None

    def _gave_no_answer(self, tracker: Tracker, text: str) -> bool:
        """A message that is no attempt at an answer: routed elsewhere, a way out, or help in other words."""
        intent = latest_intent(tracker)
        return not text.strip() or intent in LEAVING | PAUSING | ROUTED or reads_as(text) is not None

    # --- extraction ----------------------------------------------------------------------------

    async def extract_order_number(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                   domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = self._answer(tracker)
        if text is None or latest_intent(tracker) in LEAVING:
            return {}
        asked = tracker.get_slot("requested_slot") == "order_number"
        prefix = context().settings.order_number_prefix
        found = find_order_number(text, prefix, bare_ok=asked or bool(CORRECTION.search(text))) \
            or find_tracking_number(text)
        if found:
            return {"order_number": found}
        if asked and not self._gave_no_answer(tracker, text) and not find_email(text) \
                and not tracker.get_slot("order_lookup"):
            return {"order_number": ""}  # something was typed but it is no order number: say so
        return {}

    async def extract_identity_proof(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                     domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = self._answer(tracker)
        if text is None or latest_intent(tracker) in LEAVING:
            return {}
        email = find_email(text)
        if email:
            return {"identity_proof": email}
        asked = tracker.get_slot("requested_slot")
        if asked == "identity_proof":
            if CORRECTION.search(text):
                return {}  # "sorry, wrong number, it's 1004": a new order number, not a postcode
            # The digits of an order number written as one ("where is WS-1004?") are not a postcode.
            number = find_order_number(text, context().settings.order_number_prefix)
            postcode = find_postcode(text, exclude=number)
            if postcode:
                return {"identity_proof": postcode}
            if not self._gave_no_answer(tracker, text):
                return {"identity_proof": ""}
            return {}
        # Asked for the order number, the shopper may give the postcode with it
        # ("it's 1043, postcode 1015 CW"), as they may in their first message.
        if asked == "order_number":
            details = find_details(text, context().settings.order_number_prefix, loose=True)
            if (details.order_number or details.tracking_number) and details.postcode:
                return {"identity_proof": details.postcode}
        return {}

    async def extract_lookup_email(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                   domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = self._answer(tracker)
        if text is None or not tracker.get_slot("order_lookup") or latest_intent(tracker) in LEAVING:
            return {}
        email = find_email(text)
        if email:
            return {"lookup_email": email}
        if tracker.get_slot("requested_slot") == "lookup_email" and not self._gave_no_answer(tracker, text) \
                and not find_postcode(text):
            return {"lookup_email": ""}
        return {}

    async def extract_lookup_postcode(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                      domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = self._answer(tracker)
        if text is None or not tracker.get_slot("order_lookup") or latest_intent(tracker) in LEAVING:
            return {}
        postcode = find_postcode(text, exclude=find_order_number(text, context().settings.order_number_prefix))
        if postcode:
            return {"lookup_postcode": postcode}
        if tracker.get_slot("requested_slot") == "lookup_postcode" and not self._gave_no_answer(tracker, text) \
                and not find_email(text):
            return {"lookup_postcode": ""}
        return {}

    # --- validation ----------------------------------------------------------------------------

    async def validate_order_number(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if slot_value is None:
            return {"order_number": None}
        if not slot_value:
            return missed(dispatcher, tracker, "order_number", "utter_invalid_order_number")
        result: Dict[Text, Any] = {"order_number": slot_value, "failed_answers": 0}
        proof = tracker.get_slot("identity_proof")
        if proof and "identity_proof" not in tracker.slots_to_validate():  # the proof came first: check now
            result.update(await self._check(dispatcher, tracker, slot_value, proof))
        return result

    async def validate_identity_proof(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                      domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if slot_value is None:
            return {"identity_proof": None}
        if not slot_value:
            return missed(dispatcher, tracker, "identity_proof", "utter_invalid_proof")
        reference = tracker.get_slot("order_number")
        if not reference:
            return {"identity_proof": slot_value}
        return await self._check(dispatcher, tracker, reference, slot_value)

    async def validate_lookup_email(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if slot_value is None:
            return {}
        if not slot_value:
            return missed(dispatcher, tracker, "lookup_email", "utter_invalid_lookup_email")
        postcode = tracker.get_slot("lookup_postcode")
        if postcode and "lookup_postcode" not in tracker.slots_to_validate():
            return await self._look_up(dispatcher, tracker, slot_value, postcode)
        return {"lookup_email": slot_value, "failed_answers": 0}

    async def validate_lookup_postcode(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                       domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if slot_value is None:
            return {}
        if not slot_value:
            return missed(dispatcher, tracker, "lookup_postcode", "utter_invalid_lookup_postcode")
        email = tracker.get_slot("lookup_email")
        if email:
            return await self._look_up(dispatcher, tracker, email, slot_value)
        return {"lookup_postcode": slot_value, "failed_answers": 0}

    # --- the store -----------------------------------------------------------------------------

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
            return {"order_number": reference, "identity_proof": proof, "verified_order": outcome.order_number,
                    "failed_answers": 0}
        if outcome.result == VerifyResult.LOCKED:
            dispatcher.utter_message(response="utter_locked_out")
            return {"locked_out": True, "order_number": None, "identity_proof": None, "requested_slot": None}
        if outcome.result == VerifyResult.EMAIL_PAUSED:
            # Someone else may have paused this email: the owner proves the order with its postcode instead,
            # in this same conversation (a refused attempt is not recorded and locks nothing).
            dispatcher.utter_message(response="utter_proof_email_paused")
            return {"identity_proof": None}
        if outcome.result == VerifyResult.POSTCODE_PAUSED:
            dispatcher.utter_message(response="utter_proof_need_email")
            return {"identity_proof": None}
        # The order number stays: the next email or postcode is checked against it, and a new number replaces it.
        dispatcher.utter_message(response="utter_proof_mismatch")
        return {"identity_proof": None}

    async def _look_up(self, dispatcher: CollectingDispatcher, tracker: Tracker, email: str,
                       postcode: str) -> Dict[Text, Any]:
        """The shopper's orders to that postcode, to choose from; a miss counts like a wrong proof."""
        ctx = context()
        found = await ctx.store(lambda session: look_up(
            session=session, conversation_id=tracker.sender_id, email=email, postcode=postcode,
            policy=ctx.settings.policy, now=ctx.now()))
        cleared = {"lookup_email": None, "lookup_postcode": None}
        if found.result == VerifyResult.VERIFIED:
            today = ctx.today()
            lines = "\n".join(choice_line(choice, tz=ctx.settings.tz, today=today) for choice in found.orders)
            dispatcher.utter_message(response="utter_lookup_found", orders=lines,
                                     buttons=[{"title": choice.number, "payload": choice.number}
                                              for choice in found.orders])
            # The order they choose is checked with this email, as if they had typed both.
            return {"lookup_email": email, "lookup_postcode": postcode, "identity_proof": email,
                    "order_number": None, "failed_answers": 0}
        if found.result == VerifyResult.LOCKED:
            dispatcher.utter_message(response="utter_locked_out")
            return {**cleared, "order_lookup": None, "locked_out": True, "requested_slot": None}
        if found.result in (VerifyResult.EMAIL_PAUSED, VerifyResult.POSTCODE_PAUSED):
            # Paused lookups (perhaps by someone else) lock nothing: the order number still works.
            dispatcher.utter_message(response="utter_lookup_unavailable")
            return {**cleared, "order_lookup": None}
        dispatcher.utter_message(response="utter_lookup_mismatch")
        return cleared


class ActionAskOrderNumber(AskQuestion):
    slot = "order_number"


class ActionAskIdentityProof(AskQuestion):
    slot = "identity_proof"


class ActionAskLookupEmail(AskQuestion):
    slot = "lookup_email"


class ActionAskLookupPostcode(AskQuestion):
    slot = "lookup_postcode"
