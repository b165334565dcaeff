"""Reads an order question where the intent classifier heard something else.

"so what do I do now?", "do I pay duties?", "wtf is it lost??" name nothing
the classifier has seen often; their words (bot.domain.questions) say plainly
that they ask about an order.  This component runs after the classifier and
the fallback classifier: a message that asks such a question and was not
already taken for an order question becomes `ask_about_order`, and the actions
answer each question it asks.  Ways out keep their intent unless the message
asks about the order too, so "stop" and "a person, please" still do what they say.

A message taken for out of scope (or not understood) that names an order as
one is written ("got charged twice for ws 1186, where is it", "1Z 999 AA1 01
2345 6784") is the shopper giving that order: it becomes `inform`, and the
rules start the order check with the number in it.  Without an order number
but with an email and a postcode ("I don't know my order number, email ...,
postcode ..."), it becomes `lookup_order`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.config import get_settings
from bot.domain.parsing import find_email, find_order_reference, find_postcode
from bot.domain.questions import Topic, questions
from bot.domain.updates import wants_updates

#: The intents of consent to proactive updates.
SUBSCRIBE, UNSUBSCRIBE = "subscribe_updates", "unsubscribe_updates"
#: The intent the assistant answers follow-up questions for.
ASK_ABOUT_ORDER = "ask_about_order"
#: Intents that already reach the order flows (the actions read the questions from the text there).
#: Intents that keep a message out of the order flows; a message naming an order is not kept out.
KEPT_OUT = frozenset({"out_of_scope", "nlu_fallback"})
ORDER_INTENTS = frozenset({"order_status", "delivery_delay", "change_address", "refund_or_reship",
                           "ask_delivery_address", ASK_ABOUT_ORDER, "human_handoff", "lookup_order"})


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False)
class OrderQuestionReader(GraphComponent, IntentClassifier):
    """Sets `ask_about_order` on a message that asks a follow-up question the classifier missed."""

    def __init__(self, order_number_prefix: str = "") -> None:
        self.prefix = order_number_prefix

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> OrderQuestionReader:
        return cls(get_settings().order_number_prefix)

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            self._read(message)
        return messages

    def _read(self, message: Message) -> None:
        intent = (message.get(INTENT) or {}).get(INTENT_NAME_KEY)
        text = message.get(TEXT) or ""
        if text.startswith("/"):
            return
        if self._read_updates(message, intent, text):
            return
        if intent == "change_address" and not find_postcode(text) \
                and any(q.topic == Topic.NOT_HOME for q in questions(text, dt.date.today())):
            # "not home today, can you deliver it tomorrow instead": another day, not another address.
            _set_intent(message, ASK_ABOUT_ORDER)
            return
        if intent in ORDER_INTENTS:
            return
        # The day only matters to the answer; any day finds the same questions.
        if questions(text, dt.date.today()):
            _set_intent(message, ASK_ABOUT_ORDER)
        elif intent in KEPT_OUT | {"insult"} and find_order_reference(text, self.prefix):
            # Anger with the order number in it ("useless bot, my order 1012 is lost") wants that order seen to.
            _set_intent(message, "inform")
        elif intent in KEPT_OUT | {"dont_know", "insult"} and not find_order_reference(text, self.prefix) \
                and find_email(text) and find_postcode(text):
            # "I don't know my order number. email ..., postcode ...": the lookup, with both details.
            _set_intent(message, "lookup_order")


    def _read_updates(self, message: Message, intent: Optional[str], text: str) -> bool:
        """Consent is read from the words, not guessed: a refusal is never taken for a request.

        "keine Updates mehr bitte" or "actually no, stop sending me these" stop updates
        whatever the classifier made of them; "keep me posted about WS-1008, jane@x.com"
        starts with checking the order (the consent follows once it is verified).
        """
        wanted = wants_updates(text)
        if wanted is False and intent not in ORDER_INTENTS - {"human_handoff"} and intent != UNSUBSCRIBE:
            _set_intent(message, UNSUBSCRIBE)
            return True
        if wanted is True or intent == SUBSCRIBE:
            names_order = find_order_reference(text, self.prefix) or find_email(text)
            if names_order and intent not in ORDER_INTENTS:
                _set_intent(message, "order_status")
                return True
            if wanted is True and intent not in ORDER_INTENTS | {SUBSCRIBE}:
                _set_intent(message, SUBSCRIBE)
                return True
        return False


def _set_intent(message: Message, name: str) -> None:
    message.set(INTENT, {INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: 1.0}, add_to_output=True)
    ranking = [entry for entry in message.get(INTENT_RANKING_KEY) or [] if entry.get(INTENT_NAME_KEY) != name]
    message.set(INTENT_RANKING_KEY, [{INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: 1.0}, *ranking],
                add_to_output=True)
