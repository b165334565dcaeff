"""A new conversation session: what carries over, and what must be proven again."""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.context import context
from bot.services.verification import forget

#: Slots that prove something; a new session starts without them (the store's records end too).
NOT_CARRIED = frozenset({"verified_order", "identity_proof", "locked_out", "requested_slot"})


class ActionSessionStart(Action):
    """Starts a session like Rasa's own, but ends the conversation's verifications.

    The slots that only describe where the conversation was (the order number
    typed, a job under way) carry over when the domain says so; the proof of
    identity never does, so a shopper coming back tomorrow is asked again.
    """

    def name(self) -> Text:
        return "action_session_start"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        await context().store(lambda session: forget(session=session, conversation_id=tracker.sender_id))
        events: List[EventType] = [SessionStarted()]
        if (domain.get("session_config") or {}).get("carry_over_slots_to_new_session", True):
            events += [SlotSet(name, value) for name, value in tracker.current_slot_values().items()
                       if name not in NOT_CARRIED and value is not None]
        events.append(ActionExecuted("action_listen"))
        return events
