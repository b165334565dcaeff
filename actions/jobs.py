"""Answering for a verified order: where it is, why it is late, and starting the fixes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.common import UNPROVEN, polite_failure, said_since_message, send_to_helpdesk, still_verified, transcript
from actions.context import context
from bot.domain.enums import AddressMode, ClaimOutcome, HandoffReason, Job
from bot.services import address, claims
from bot.services.answers import Answer, delay_answer, status_answer, status_messages
from bot.services.handoff import availability, helpdesk_payload, open_handoff
from bot.store.queries import get_order

#: The slots of the address form, cleared before it starts and after it ends.
ADDRESS_SLOTS = ("new_street", "new_city", "new_postcode", "new_country", "address_confirmed")


@dataclass
class Reply:
    """What an action says and does, decided inside a store transaction and sent after it.

    `messages` are keyword arguments for `dispatcher.utter_message` (a
    `response` with its variables, or a composed `text`).
    """

    messages: List[Dict[str, Any]] = field(default_factory=list)
    events: List[EventType] = field(default_factory=list)
    #: Set when the conversation must go to a person afterwards, with the reason.
    hand_off: Optional[str] = None

    def say(self, response: Optional[str] = None, **kwargs: Any) -> Reply:
        self.messages.append({"response": response, **kwargs} if response else kwargs)
        return self

    @classmethod
    def unproven(cls) -> Reply:
        """The answer when the store holds no live verification: ask again, forget the order's proof."""
        return cls(events=list(UNPROVEN)).say("utter_verification_needed")

    def send(self, dispatcher: CollectingDispatcher) -> None:
        for message in self.messages:
            dispatcher.utter_message(**message)

    def answer(self, answer: Answer) -> Reply:
        """A composed answer, ending with what it offers next (buttons), or "anything else?"."""
        for message in answer.messages:
            self.say(text=message)
        offer = answer.offer
        if offer is None:
            return self.say("utter_anything_else")
        self.say(offer.response)
        if offer.claim_reason:
            self.events.append(SlotSet("claim_reason", offer.claim_reason))
        if offer.handoff_reason:
            self.events.append(SlotSet("handoff_reason", offer.handoff_reason))
        return self


async def hand_off(dispatcher: CollectingDispatcher, tracker: Tracker, reason: str) -> List[EventType]:
    """Record the handoff, tell the shopper when a person will answer, and pause the bot.

    A paused conversation still records what the shopper writes (the agent
    reads it in the console) but the bot predicts nothing until the agent
    hands it back.  The helpdesk copy, when configured, goes out after the
    handoff is stored and never holds up the answer.
    """
    ctx = context()
    config, moment = ctx.settings, ctx.now()
    lines = transcript(tracker)
    claimed = tracker.get_slot("verified_order")

    def record(session: Session) -> Any:
        # Only an order the store says this conversation proved goes to the agent as "verified".
        order_number = claimed if still_verified(session, tracker.sender_id, claimed) else None
        handoff, created = open_handoff(
            session=session, conversation_id=tracker.sender_id,
            channel=tracker.get_latest_input_channel() or "rest", reason=reason,
            order_number=order_number, transcript=lines,
            settings=config, now=moment, helpdesk=bool(config.helpdesk_url))
        when = availability(session=session, settings=config, now=moment)
        copy = helpdesk_payload(handoff) if created and config.helpdesk_url else None
        return when, copy

    when, copy = await ctx.store(record)
    dispatcher.utter_message(response=when.response, **when.wording)
    if copy is not None:
        send_to_helpdesk(copy, config)
    return [SlotSet("handoff_reason", None), ConversationPaused()]


class ActionContinueJob(Action):
    """Runs the job the shopper asked for once the order is verified."""

    def name(self) -> Text:
        return "action_continue_job"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        events = await continue_job(dispatcher, tracker)
        # The rules start the next form from this slot, so it is always set.
        if not any(e.get("name") == "next_form" for e in events):
            events.append(SlotSet("next_form", "none"))
        return events


async def continue_job(dispatcher: CollectingDispatcher, tracker: Tracker) -> List[EventType]:
    """The job in `pending_job` for the order in `verified_order`."""
    if tracker.get_slot("locked_out"):
        # Offered, not opened: a stranger locking a conversation must not fill the agents' queue.
        # On a later question the shopper is told again why nothing is checked.
        if not said_since_message(tracker, ("utter_locked_out", "utter_proof_email_paused")):
            dispatcher.utter_message(response="utter_locked_out")
        dispatcher.utter_message(response="utter_offer_human")
        return [SlotSet("pending_job", None), SlotSet("handoff_reason", HandoffReason.LOCKED_OUT.value)]
    number = tracker.get_slot("verified_order")
    if not number:
        return []
    job = tracker.get_slot("pending_job") or Job.STATUS
    claim_reason = tracker.get_slot("claim_reason")
    reply = await context().store(lambda session: _job_reply(session, tracker.sender_id, number, job, claim_reason))
    reply.send(dispatcher)
    if reply.hand_off:
        return reply.events + await hand_off(dispatcher, tracker, reply.hand_off)
    return reply.events


def _job_reply(session: Session, conversation_id: str, number: str, job: str, claim_reason: Optional[str]) -> Reply:
    ctx = context()
    config, moment = ctx.settings, ctx.now()
    if not still_verified(session, conversation_id, number):
        return Reply.unproven()
    order = get_order(session=session, number=number)
    if order is None:
        raise LookupError(f"verified order {number} disappeared")
    reply = Reply()
    if job == Job.DELAY:
        return reply.answer(delay_answer(order, config, moment))
    if job == Job.ADDRESS:
        mode = address.change_mode(order, config, moment)
        reply.say(mode.response, address=address.describe(address.current_address(order)), **mode.wording)
        if mode.kind == AddressMode.IMPOSSIBLE:
            reply.say("utter_offer_human")
            reply.events.append(SlotSet("handoff_reason", HandoffReason.ADDRESS_IMPOSSIBLE.value))
            return reply
        reply.events += [SlotSet(s, None) for s in ADDRESS_SLOTS] + [SlotSet("next_form", "address_form")]
        return reply
    if job == Job.CLAIM:
        reason = claim_reason or claims.guess_reason(order, config, moment)
        if reason is None:
            return reply.say("utter_ask_claim_reason")
        decision = claims.decide(session=session, order=order, reason=reason, settings=config, now=moment)
        reply.say(decision.response, **decision.wording)
        if decision.outcome == ClaimOutcome.ELIGIBLE:
            reply.events += [SlotSet("claim_reason", reason), SlotSet("resolution_choice", None),
                             SlotSet("next_form", "claim_form")]
        elif decision.outcome == ClaimOutcome.HUMAN:
            reply.events.append(SlotSet("claim_reason", reason))
            reply.hand_off = decision.human_reason or "policy"
        else:
            reply.say("utter_anything_else")
            reply.events.append(SlotSet("claim_reason", None))
        return reply
    return reply.answer(status_answer(order, config, moment))


class ActionStatusDigression(Action):
    """A status or delay question in the middle of a form: answer it, then carry on."""

    def name(self) -> Text:
        return "action_status_digression"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        number = tracker.get_slot("verified_order")
        if not number:
            return []
        ctx = context()

        def answer(session: Session) -> List[str]:
            if not still_verified(session, tracker.sender_id, number):
                return []
            order = get_order(session=session, number=number)
            return status_messages(order, ctx.settings, ctx.now()) if order is not None else []

        for message in await ctx.store(answer):
            dispatcher.utter_message(text=message)
        return []
