"""Answering for a verified order: where it is, why it is late, and starting the fixes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Text, Tuple

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.common import UNPROVEN, polite_failure, said_since_message, send_to_helpdesk, still_verified, transcript
from actions.context import context
from actions.updates import channel_of, quiet_note
from bot.domain.carriers import FINAL_STATUSES
from bot.domain.enums import AddressMode, ClaimOutcome, HandoffReason, Job, ResolutionKind, Status
from bot.domain.questions import Question, Topic, questions, resolution_in, says_checked
from bot.services import address, claims, followups, updates
from bot.services.answers import OFFER_HUMAN, Answer, Offer, delay_answer, status_answer
from bot.services.handoff import availability, helpdesk_payload, open_handoff
from bot.store.models import Order
from bot.store.queries import get_order

#: Words that ask where the order is, besides the follow-up questions of the same message.
ASKS_STATUS = re.compile(r"\bwhere\b|\bstatus\b|\btrack(?:ing)?\b|\bany\s+(?:news|update)|"
                         r"\b(?:has|is)\s+it\s+(?:been\s+)?(?:delivered|arrived|come|shipped|sent)\b|"
                         r"\bdid\s+it\s+(?:arrive|come|ship|get\s+delivered)\b", re.I)
#: A refund or a replacement asked for in words: with it, a question beside it does not stop the claim.
WANTS_RESOLUTION = re.compile(r"\b(?:refund|replace\w*|money\s+back|new\s+one|reship|resend|compensat\w*)", re.I)
#: Follow-up questions that turn a refund-or-replacement request into something else.
NOT_A_CLAIM = frozenset({Topic.SWITCH, Topic.RETURN})

#: The order number in an offer of updates ("... anything changes with order WS-1003?").
OFFER_NUMBER = re.compile(r"with order (\S+?)\?")

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

    def answer(self, answer: Answer | followups.Reply) -> Reply:
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
    asked = Asked.from_tracker(tracker)
    said = tracker.latest_message.get("text") or ""
    reply = await context().store(
        lambda session: _job_reply(session, tracker.sender_id, number, job, claim_reason, asked, said))
    reply.send(dispatcher)
    if reply.hand_off:
        return reply.events + await hand_off(dispatcher, tracker, reply.hand_off)
    return reply.events


@dataclass(frozen=True)
class Asked:
    """The follow-up question behind the job, and what this conversation was already told about the order."""

    question: str = ""
    status_told: str = ""  # the order whose status this conversation was given
    goodwill_given: str = ""  # the order this conversation was given the goodwill code for
    updates_wanted: bool = False  # asked to be kept posted before the order was verified
    updates_offered: Tuple[str, ...] = ()  # the orders this conversation was offered updates about

    @classmethod
    def from_tracker(cls, tracker: Tracker) -> Asked:
        offered = tuple(OFFER_NUMBER.findall(" ".join(
            e.get("text") or "" for e in tracker.events
            if e.get("event") == "bot" and (e.get("metadata") or {}).get("utter_action") == "utter_offer_updates")))
        return cls(tracker.get_slot("order_question") or "", tracker.get_slot("status_told") or "",
                   tracker.get_slot("goodwill_given") or "", bool(tracker.get_slot("updates_wanted")), offered)


def _questions(asked: Asked) -> List[Question]:
    ctx = context()
    return questions(asked.question, ctx.today())


def _answer_questions(session: Session, reply: Reply, order: Order, asked: List[Question], conversation_id: str,
                      offer: Optional[Offer] = None, after_status: bool = False) -> None:
    ctx = context()
    reply.answer(followups.answer_questions(session=session, order=order, asked=asked, settings=ctx.settings,
                                            now=ctx.now(), conversation_id=conversation_id, offer=offer,
                                            after_status=after_status))


def _status(session: Session, reply: Reply, order: Order, asked: Asked, *, delay: bool, then: bool,
            steps: bool = True) -> Answer:
    """The status (or delay) answer; the goodwill code once per order and conversation; `then`: questions follow."""
    ctx = context()
    goodwill = asked.goodwill_given != order.number
    compose = delay_answer if delay else status_answer
    answer = compose(order, ctx.settings, ctx.now(), goodwill=goodwill)
    today = ctx.today()
    redirect = followups.pending_redirect(session, order, today, ctx.settings.tz)
    booked = followups.booked_note(session, order, today, ctx.settings.tz)
    messages, offer = list(answer.messages), answer.offer
    if redirect:
        messages.insert(1 if len(messages) > 1 else len(messages), redirect)
    if not steps:
        messages = [m for m in messages if m != answer.steps]
    if booked:
        # Already settled: say so, and offer no second refund or replacement.
        messages = [m for m in messages if m != answer.steps] + [booked]
        offer = None if offer is not None and offer.response != OFFER_HUMAN else offer
    if then:
        for message in messages:
            reply.say(text=message)
    else:
        reply.answer(Answer(tuple(messages), answer.late, answer.goodwill_code, offer, answer.steps))
    answer = Answer(answer.messages, answer.late, answer.goodwill_code, offer, answer.steps)
    reply.events.append(SlotSet("status_told", order.number))
    if answer.goodwill_code:
        reply.events.append(SlotSet("goodwill_given", order.number))
    return answer


def _job_reply(session: Session, conversation_id: str, number: str, job: str, claim_reason: Optional[str],
               asked: Asked, said: str = "") -> Reply:
    ctx = context()
    config, moment = ctx.settings, ctx.now()
    if not still_verified(session, conversation_id, number):
        return Reply.unproven()
    order = get_order(session=session, number=number)
    if order is None:
        raise LookupError(f"verified order {number} disappeared")
    reply = Reply(events=[SlotSet("order_question", None)])
    found = _questions(asked)
    if found and (job in (Job.STATUS, Job.DELAY, Job.QUESTION) or (job == Job.CLAIM and (
            any(q.topic in NOT_A_CLAIM for q in found) or not WANTS_RESOLUTION.search(asked.question)))):
        # A long message gets the status first (when this conversation hasn't had it), then each answer.
        offer, told = None, False
        # The first answer about an order in a conversation leads with its status (the problem, the apology).
        if asked.status_told != order.number:
            offer, told = _status(session, reply, order, asked, delay=job == Job.DELAY, then=True).offer, True
        _answer_questions(session, reply, order, found, conversation_id, offer, after_status=told)
        reply = _without_repeats(reply)
        # "notify me when it gets redelivered": the question is answered, and the consent is taken.
        return _offer_updates(session, reply, order, conversation_id, asked) if asked.updates_wanted else reply
    if job == Job.DELAY:
        _status(session, reply, order, asked, delay=True, then=False)
        return _offer_updates(session, reply, order, conversation_id, asked)
    if job == Job.ADDRESS:
        booked = followups.booked_resolution(session, order)
        if booked is not None and booked.kind == ResolutionKind.REFUND:
            # Refunded: nothing will be sent again, so there is no address to change.
            reply.say(text=f"Order {order.number} was refunded ({booked.amount} {booked.currency}), so it won't be "
                           "sent again and there's no address to change.")
            reply.say("utter_offer_switch_to_reship" if claims.can_switch(booked, config, moment)
                      else "utter_anything_else")
            return reply
        mode = address.change_mode(order, config, moment)
        reply.say(mode.response, address=address.describe(address.current_address(order)), **mode.wording)
        if mode.kind == AddressMode.IMPOSSIBLE:
            reply.say("utter_offer_human")
            reply.events.append(SlotSet("handoff_reason", HandoffReason.ADDRESS_IMPOSSIBLE.value))
            return reply
        reply.events += [SlotSet(s, None) for s in ADDRESS_SLOTS] + [SlotSet("next_form", "address_form")]
        return reply
    if job == Job.CLAIM:
        return _claim(session, reply, order, claim_reason, asked, said)
    _status(session, reply, order, asked, delay=False, then=False)
    return _offer_updates(session, reply, order, conversation_id, asked)


def _offer_updates(session: Session, reply: Reply, order: Order, conversation_id: str, asked: Asked) -> Reply:
    """A status or delay answer that ends on "anything else?" offers updates instead, for a parcel on its way.

    Not when the conversation gets them for this order, had them and stopped
    them, was offered them before (a "no" stands), or when every parcel has
    reached the end of its journey.  A shopper who asked to be kept posted
    before the order was verified gets them without being asked again, at the
    end of whatever the answer ends with (a question about a colleague stays last).
    """
    if not reply.messages or not order.shipments or all(s.status in FINAL_STATUSES for s in order.shipments):
        return reply
    if order.number in updates.subscriptions(session=session, conversation_id=conversation_id):
        return reply
    last = reply.messages[-1].get("response")
    if asked.updates_wanted:
        ctx = context()
        updates.subscribe(session=session, conversation_id=conversation_id, channel=channel_of(conversation_id),
                          order_number=order.number, settings=ctx.settings, now=ctx.now())
        done = {"response": "utter_updates_on", "number": order.number, "quiet": quiet_note(ctx.settings)}
        if last == "utter_anything_else":
            reply.messages[-1] = done
        else:
            reply.messages.insert(len(reply.messages) - 1 if last else len(reply.messages), done)
        reply.events.append(SlotSet("updates_wanted", None))
        return reply
    if last != "utter_anything_else" or order.number in asked.updates_offered:
        return reply
    if updates.followed_before(session=session, conversation_id=conversation_id, order_number=order.number):
        return reply
    reply.messages[-1] = {"response": "utter_offer_updates", "number": order.number}
    return reply


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _without_repeats(reply: Reply) -> Reply:
    """The reply without the sentences it already said (the status's pickup or customs step, then the answer)."""
    said: set = set()
    kept: List[Dict[str, Any]] = []
    for message in reply.messages:
        text = message.get("text")
        if not text:
            kept.append(message)
            continue
        sentences = [part for part in _SENTENCE_END.split(text) if part]
        new = [part for part in sentences if part.strip() not in said]
        said.update(part.strip() for part in sentences)
        if new:
            kept.append({**message, "text": " ".join(new)})
    reply.messages = kept
    return reply


def _claim(session: Session, reply: Reply, order: Order, claim_reason: Optional[str], asked: Asked,
           said: str) -> Reply:
    ctx = context()
    reason = claim_reason or claims.guess_reason(order, ctx.settings, ctx.now())
    start = [SlotSet("resolution_choice", None), SlotSet("next_form", "claim_form")]
    if reason is None:
        found = claims.parcels(order, ctx.settings, ctx.now())
        if not found or not all(p.state.status == Status.DELIVERED for p in found):
            # "they missed me, refund?", "what if it doesn't come?": nothing to claim for yet; the status
            # says what happens next and from when a refund or replacement is possible.
            if WANTS_RESOLUTION.search(said):
                reply.say(text=f"Order {order.number} can't have a refund or a replacement yet: it isn't lost, "
                               "damaged or late enough. Here's where it is.")
            _status(session, reply, order, asked, delay=False, then=False)
            return reply
        # Delivered: the claim form asks what happened, with a way out; its answer is decided like this one.
        reply.events += [SlotSet("claim_reason", None), SlotSet("delivery_checked", None), *start]
        return reply
    outcome = claim_decision(session, order, reason, checked=says_checked(said) is True)
    if asked.status_told != order.number and outcome.status_first:
        # "tracking says damaged wtf": what happened first (with the apology), then the choice.
        _status(session, reply, order, asked, delay=False, then=True, steps=False)
    reply.messages += outcome.messages
    reply.events += outcome.events
    if outcome.eligible:
        # "I want a refund": the form finds the choice made and does not ask it again.
        # A button's payload ("/refund_or_reship") names both, so it chooses neither: the form asks.
        choice = None if said.startswith("/") else resolution_in(said)
        reply.events += [SlotSet("resolution_choice", choice), SlotSet("next_form", "claim_form")]
    reply.hand_off = outcome.hand_off
    return reply


@dataclass
class ClaimDecision:
    """What the shopper is told about a claim for `reason`, the slots it sets, and whether the choice follows."""

    messages: List[Dict[str, Any]] = field(default_factory=list)
    events: List[EventType] = field(default_factory=list)
    eligible: bool = False
    hand_off: Optional[str] = None
    #: Whether the parcel's status is worth saying first (not when the decision itself gives the scan, or
    #: only says what was booked before).
    status_first: bool = True


def claim_decision(session: Session, order: Order, reason: str, *, offer_person: bool = False,
                   checked: bool = False) -> ClaimDecision:
    """The policy's decision on a claim, as the shopper hears it.

    Eligible: the decision's words, and the neighbour check first for a parcel
    scanned as delivered.  A person needed: handed over (or, with
    `offer_person`, offered).  Booked before: what was booked and, while it can
    still change, the offer of the other choice.  Not yet: why, and when.
    `checked`: the shopper already said they looked with the neighbours.
    """
    ctx = context()
    config, moment = ctx.settings, ctx.now()
    decision = claims.decide(session=session, order=order, reason=reason, settings=config, now=moment)
    result = ClaimDecision(messages=[{"response": decision.response, **decision.wording}],
                           status_first=not decision.check_first and decision.outcome != ClaimOutcome.ALREADY)
    if decision.outcome == ClaimOutcome.ELIGIBLE:
        result.eligible = True
        result.events += [SlotSet("claim_reason", reason),
                          SlotSet("delivery_checked", None if decision.check_first and not checked else True)]
    elif decision.outcome == ClaimOutcome.HUMAN:
        result.events.append(SlotSet("claim_reason", reason))
        reason_for_person = decision.human_reason or "policy"
        if offer_person:
            result.messages.append({"response": "utter_offer_human"})
            result.events.append(SlotSet("handoff_reason", str(reason_for_person)))
        else:
            result.hand_off = reason_for_person
    elif decision.outcome == ClaimOutcome.ALREADY and decision.existing is not None:
        # Booked, perhaps not carried out yet: the other choice is offered while it can still be changed.
        result.events.append(SlotSet("claim_reason", None))
        if claims.can_switch(decision.existing, config, moment):
            result.messages.append({"response": "utter_offer_switch_to_refund"
                                    if decision.existing.kind == ResolutionKind.RESHIP
                                    else "utter_offer_switch_to_reship"})
        else:
            result.messages.append({"response": "utter_offer_human"})
            result.events.append(SlotSet("handoff_reason", HandoffReason.RESOLUTION_CHANGE.value))
    elif decision.response == "utter_claim_stalled":
        result.messages.append({"response": "utter_offer_human"})
        result.events += [SlotSet("claim_reason", None),
                          SlotSet("handoff_reason", HandoffReason.DELIVERY_PROBLEM.value)]
    else:
        result.messages.append({"response": "utter_anything_else"})
        result.events.append(SlotSet("claim_reason", None))
    return result


class ActionStatusDigression(Action):
    """A question about the order in the middle of a form: answer it, then carry on."""

    def name(self) -> Text:
        return "action_status_digression"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        number = tracker.get_slot("verified_order")
        if not number:
            return []
        asked = replace(Asked.from_tracker(tracker), question=tracker.latest_message.get("text") or "")

        def answer(session: Session) -> Reply:
            if not still_verified(session, tracker.sender_id, number):
                return Reply()
            order = get_order(session=session, number=number)
            if order is None:
                return Reply()
            reply = Reply()
            found = _questions(asked)
            if found:
                _answer_questions(session, reply, order, found, tracker.sender_id)
                reply.messages = [m for m in reply.messages if m.get("response") != "utter_anything_else"]
                return reply
            _status(session, reply, order, asked, delay=False, then=True)
            return reply

        reply = await context().store(answer)
        for message in reply.messages:
            if "text" in message:  # the form asks its own question next: no buttons from the answer
                dispatcher.utter_message(text=message["text"])
        return [e for e in reply.events if e.get("name") in ("status_told", "goodwill_given")]
