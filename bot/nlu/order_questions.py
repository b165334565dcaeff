"""Reads a follow-up question about an order where the intent classifier heard something else.

"so what do I do now?", "do I pay duties?", "wtf is it lost??" name nothing
the classifier has seen often; their words (bot.domain.questions) say plainly
that they ask about an order.  This component runs after the classifier and
the fallback classifier: a message that asks such a question and was not
already taken for an order question becomes `ask_about_order`, and the actions
answer each question it asks.  Ways out keep their intent unless the message
asks about the order too, so "stop" and "a person, please" still do what they say.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.domain.questions import questions

#: The intent the assistant answers follow-up questions for.
ASK_ABOUT_ORDER = "ask_about_order"
#: Intents that already reach the order flows (the actions read the questions from the text there).
ORDER_INTENTS = frozenset({"order_status", "delivery_delay", "change_address", "refund_or_reship",
                           "ask_delivery_address", ASK_ABOUT_ORDER, "human_handoff", "lookup_order"})


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False)
class OrderQuestionReader(GraphComponent, IntentClassifier):
    """Sets `ask_about_order` on a message that asks a follow-up question the classifier missed."""

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> OrderQuestionReader:
        return cls()

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            self._read(message)
        return messages

    @staticmethod
    def _read(message: Message) -> None:
        intent = message.get(INTENT) or {}
        if intent.get(INTENT_NAME_KEY) in ORDER_INTENTS:
            return
        # The day only matters to the answer; any day finds the same questions.
        if not questions(message.get(TEXT) or "", dt.date.today()):
            return
        message.set(INTENT, {INTENT_NAME_KEY: ASK_ABOUT_ORDER, PREDICTED_CONFIDENCE_KEY: 1.0}, add_to_output=True)
        ranking = [entry for entry in message.get(INTENT_RANKING_KEY) or []
                   if entry.get(INTENT_NAME_KEY) != ASK_ABOUT_ORDER]
        message.set(INTENT_RANKING_KEY, [{INTENT_NAME_KEY: ASK_ABOUT_ORDER, PREDICTED_CONFIDENCE_KEY: 1.0}, *ranking],
                    add_to_output=True)
