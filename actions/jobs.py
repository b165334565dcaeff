"""Answering for a verified order: where it is, why it is late, and starting the fixes."""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import now, polite_failure, send_to_helpdesk, settings, store, transcript
from bot import address, claims
from bot.answers import delay_answer, status_messages
from bot.handoff import availability, helpdesk_payload, open_handoff
from bot.store import get_order

CLAIM_BUTTONS = [
    {"title": "Refund or replacement", "payload": "/refund_or_reship"},
    {"title": "No, thanks", "payload": "/deny"},
]


async def hand_off(dispatcher: CollectingDispatcher, tracker: Tracker, reason: str) -> List[EventType]:
    """Record the handoff, tell the shopper when a person will answer, and pause the bot.

    A paused conversation still records what the shopper writes (the agent
    reads it in the console) but the bot predicts nothing until the agent
    hands it back.  The helpdesk copy, when configured, goes out after the
    handoff is stored and never holds up the answer.
    """
    config, moment = settings(), now()
    with store() as session:
        handoff, created = open_handoff(
            session=session, conversation_id=tracker.sender_id,
            channel=tracker.get_latest_input_channel() or "rest", reason=reason,
            order_number=tracker.get_slot("verified_order"), transcript=transcript(tracker),
            settings=config, now=moment, helpdesk=bool(config.helpdesk_url))
        when = availability(session=session, settings=config, now=moment)
        copy = helpdesk_payload(handoff) if created and config.helpdesk_url else None
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
        return [SlotSet("pending_job", None)] + await hand_off(dispatcher, tracker, "locked_out")
    number = tracker.get_slot("verified_order")
    if not number:
        return []
    job = tracker.get_slot("pending_job") or "status"
    config, moment = settings(), now()
    with store() as session:
        order = get_order(session=session, number=number)
        if order is None:
            raise LookupError(f"verified order {number} disappeared")
        if job == "delay":
            answer = delay_answer(order, config, moment)
            for message in answer.messages[:-1]:
                dispatcher.utter_message(text=message)
            if answer.claim_possible:
                dispatcher.utter_message(text=answer.messages[-1] + " Would you like a refund or a replacement?",
                                         buttons=CLAIM_BUTTONS)
                return [SlotSet("claim_reason", "lost" if _lost(order, config, moment) else "late")]
            dispatcher.utter_message(text=answer.messages[-1])
            dispatcher.utter_message(response="utter_anything_else")
            return []
        if job == "address":
            mode = address.change_mode(order, config, moment)
            if mode.kind == address.IMPOSSIBLE:
                dispatcher.utter_message(text=f"{mode.explanation} It's going to "
                                         f"{address.describe(address.current_address(order))}.")
                dispatcher.utter_message(response="utter_offer_human")
                return [SlotSet("handoff_reason", "address_impossible")]
            dispatcher.utter_message(text=f"{mode.explanation} It's currently going to "
                                     f"{address.describe(address.current_address(order))}.")
            return [SlotSet(s, None) for s in ADDRESS_SLOTS] + [SlotSet("next_form", "address_form")]
        if job == "claim":
            reason = tracker.get_slot("claim_reason") or claims.guess_reason(order, config, moment)
            if reason is None:
                dispatcher.utter_message(response="utter_ask_claim_reason")
                return []
            decision = claims.decide(session=session, order=order, reason=reason, settings=config, now=moment)
            dispatcher.utter_message(text=decision.message)
            if decision.outcome == claims.ELIGIBLE:
                return [SlotSet("claim_reason", reason), SlotSet("resolution_choice", None),
                    SlotSet("next_form", "claim_form")]
            if decision.outcome != claims.HUMAN:
                dispatcher.utter_message(response="utter_anything_else")
                return [SlotSet("claim_reason", None)]
        else:
            for message in status_messages(order, config, moment):
                dispatcher.utter_message(text=message)
            dispatcher.utter_message(response="utter_anything_else")
            return []
    # Only a claim that needs a person gets here, after the store session closed.
    return [SlotSet("claim_reason", reason)] + await hand_off(dispatcher, tracker, decision.human_reason or "policy")


ADDRESS_SLOTS = ("new_street", "new_city", "new_postcode", "new_country", "address_confirmed")


def _lost(order: Any, config: Any, moment: Any) -> bool:
    from bot.answers import parcels

    return any(p.state.presumed_lost for p in parcels(order, config, moment))


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
        with store() as session:
            order = get_order(session=session, number=number)
            if order is not None:
                for message in status_messages(order, settings(), now()):
                    dispatcher.utter_message(text=message)
        return []
