"""Follow-up questions: found in the shopper's words, answered from the demo shop (SQLite and PostgreSQL).

The questions are the ones shoppers asked in review ("will it arrive before
Saturday?", "is it lost?", "so what do I do now?", "can my husband collect
it?", "why customs? do I pay duties?", "can I have a refund instead?").
"""

from __future__ import annotations

import datetime as dt
import re
from typing import List
from zoneinfo import ZoneInfo

import pytest
from rasa.shared.nlu.training_data.message import Message
from sqlalchemy import select

from bot.config import Settings
from bot.domain.enums import ClaimReason, ResolutionKind, Status
from bot.domain.questions import Question, Topic, questions, topics
from bot.nlu.order_questions import OrderQuestionReader
from bot.services import claims
from bot.services.answers import OFFER_CLAIM, OFFER_HUMAN, parcels
from bot.services.followups import Reply, answer_questions
from bot.store.models import AuditLog, Order, Resolution

from .conftest import NOW
from .test_answers import TODAY, dates_in, showcase

# --- finding the questions ------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("will it arrive before Saturday?", [Topic.ARRIVE_BY]),
    ("is it lost?", [Topic.IS_LOST]),
    ("so what do I do now?", [Topic.NEXT_STEP]),
    ("why customs? do I pay duties?", [Topic.CUSTOMS]),
    ("can my husband collect it?", [Topic.PICKUP]),
    ("where's the pickup point and until when?", [Topic.PICKUP]),
    ("did my redirect go through?", [Topic.REDIRECT]),
    ("After a replacement... can I have a refund instead?", [Topic.SWITCH]),
    ("I don't want it anymore", [Topic.RETURN]),
    ("hi, ws-1003, will it arrive before saturday? my son's birthday. also is it lost??", [Topic.ARRIVE_BY,
                                                                                         Topic.IS_LOST]),
    ("wtf is it lost?? what do i do now", [Topic.IS_LOST, Topic.NEXT_STEP]),
    # Not follow-up questions: other things that share their words.
    ("no I don't want to change it, I'm just asking", []),
    ("I lost my password", []),
    ("How can I order a custom made sofa", []),
    ("where do penguins live", []),
    ("I ordered it on Monday", []),
    ("cancel it", []),
    ("where is my order?", []),
])
def test_the_questions_a_message_asks_are_found_in_order(text, expected):
    assert topics(text, TODAY) == expected


@pytest.mark.parametrize("text, by", [
    ("will it arrive by Friday?", dt.date(2026, 11, 20)),  # TODAY is Wednesday 18 November
    ("will it arrive before Saturday?", dt.date(2026, 11, 20)),
    ("can it come by the weekend", dt.date(2026, 11, 21)),
    ("will it be here tomorrow", dt.date(2026, 11, 19)),
    ("need it by the 25th, will it come?", dt.date(2026, 11, 25)),
    ("will it be delivered by 2 Dec", dt.date(2026, 12, 2)),
    ("will it come by next friday", dt.date(2026, 11, 27)),
    ("will it arrive in time for Christmas?", dt.date(2026, 12, 24)),
])
def test_the_day_asked_about_is_read(text, by):
    found = questions(text, TODAY)
    assert [q.topic for q in found] == [Topic.ARRIVE_BY] and found[0].by == by


@pytest.mark.parametrize("text, wants", [
    ("can I have a refund instead?", "refund"),
    ("I'd rather have a replacement", "reship"),
    ("a replacement instead of the refund please", "reship"),
    ("switch it to a refund", "refund"),
])
def test_a_switch_says_what_the_shopper_wants_instead(text, wants):
    assert [q.wants for q in questions(text, TODAY)] == [wants]


# --- the NLU component ----------------------------------------------------------------------


def _classified(text: str, intent: str) -> Message:
    message = Message(data={"text": text, "intent": {"name": intent, "confidence": 0.6},
                            "intent_ranking": [{"name": intent, "confidence": 0.6}]})
    OrderQuestionReader("WS-").process([message])
    return message


@pytest.mark.parametrize("text, heard, becomes", [
    ("why customs? do I pay duties?", "out_of_scope", "ask_about_order"),
    ("so what do I do now?", "ask_help", "ask_about_order"),
    ("wtf is it lost??", "insult", "ask_about_order"),
    ("can my husband collect it?", "nlu_fallback", "ask_about_order"),
    ("will it arrive by friday", "order_status", "order_status"),  # already reaches the order flows
    ("talk to a person, is it lost?", "human_handoff", "human_handoff"),  # a person stays a person
    ("stop", "stop", "stop"),
    ("where do penguins live", "out_of_scope", "out_of_scope"),
    ("I lost my password", "out_of_scope", "out_of_scope"),
    # Naming an order as one is written is giving that order, whatever the classifier heard.
    ("got charged twice 2x 49,95 for ws 1186, where is it", "out_of_scope", "inform"),
    ("Bestellung WS-1003 wo ist sie", "nlu_fallback", "inform"),
    ("is 1009 a prime number", "out_of_scope", "out_of_scope"),
    ("what is 15 times 230", "out_of_scope", "out_of_scope"),
    ("useless piece of junk bot, my order WS-1012", "insult", "inform"),
    ("Bonjour, ma commande WS-1011 est bloquée à la douane? code postal 8004", "out_of_scope", "inform"),
    ("I don't know my order number. email finn.muller@example.com, postcode 1000", "dont_know", "lookup_order"),
    ("thanks, WS-1003 arrived", "thanks", "thanks"),  # only out of scope, not understood and abuse are re-read
])
def test_a_missed_follow_up_question_becomes_an_order_question(text, heard, becomes):
    message = _classified(text, heard)
    assert message.get("intent")["name"] == becomes
    assert message.get("intent_ranking")[0]["name"] == becomes


# --- the answers, from the demo shop --------------------------------------------------------


@pytest.fixture
def writable_demo(engine, settings):
    """The demo shop in a store of its own, for answers that book or change something (emptied afterwards)."""
    from bot.store import db
    from bot.store.demo import seed_demo

    with db.session_scope(engine) as session:
        seed_demo(session=session, settings=settings, now=NOW)
    with db.session_factory(engine)() as session:
        yield session


def ask(session, settings: Settings, order: Order, text: str, now: dt.datetime = NOW) -> Reply:
    found = questions(text, now.astimezone(settings.tz).date())
    assert found, f"no question found in {text!r}"
    return answer_questions(session=session, order=order, asked=found, settings=settings, now=now,
                            conversation_id="rest:followups")


def text_of(reply: Reply) -> str:
    return " ".join(reply.messages)


def test_arrive_by_compares_the_carriers_estimate_with_the_day(demo_session, settings):
    order = showcase(demo_session, "in_transit_on_time")
    eta = parcels(order, settings, NOW)[0].state.eta
    assert eta is not None and eta > TODAY
    yes = answer_questions(session=demo_session, order=order, asked=[Question(Topic.ARRIVE_BY, by=eta,
                                                                              day_words="by then")],
                           settings=settings, now=NOW, conversation_id="c")
    assert text_of(yes).startswith("It should") and f"{eta.day} {eta:%b}" in text_of(yes) or "tomorrow" in text_of(yes)
    no = answer_questions(session=demo_session, order=order,
                          asked=[Question(Topic.ARRIVE_BY, by=eta - dt.timedelta(days=1), day_words="by then")],
                          settings=settings, now=NOW, conversation_id="c")
    assert text_of(no).startswith("Probably not")


def test_arrive_by_for_a_lost_parcel_says_it_wont_and_offers_the_claim(demo_session, settings):
    reply = ask(demo_session, settings, showcase(demo_session, "lost"), "will it arrive before saturday?")
    assert text_of(reply).startswith("I'm afraid it won't arrive before Saturday")
    assert reply.offer is not None and reply.offer.response == OFFER_CLAIM


def test_is_it_lost_tells_the_truth_for_each_situation(demo_session, settings):
    lost = ask(demo_session, settings, showcase(demo_session, "lost"), "is it lost?")
    assert text_of(lost).startswith("I'm afraid so") and lost.offer.response == OFFER_CLAIM
    stalled = ask(demo_session, settings, showcase(demo_session, "stalled"), "is it lost?")
    assert text_of(stalled).startswith("Not as far as we know") and "no scan" in text_of(stalled)
    assert "trace" in text_of(stalled) and stalled.offer.response == OFFER_HUMAN
    moving = ask(demo_session, settings, showcase(demo_session, "in_transit_on_time"), "is it lost?")
    assert text_of(moving).startswith("No, it isn't lost:") and "last scanned it" in text_of(moving)
    delivered = ask(demo_session, settings, showcase(demo_session, "delivered_disputed"), "has it been lost")
    assert "delivered it" in text_of(delivered) and "neighbours" in text_of(delivered)


def test_what_do_i_do_now_after_a_missed_delivery_gives_the_carriers_instructions(demo_session, settings):
    order = showcase(demo_session, "failed_attempt")
    reply = ask(demo_session, settings, order, "so what do I do now?")
    steps = text_of(reply)
    assert "What happened to the parcel" not in steps and steps
    from bot.services.answers import _missed_delivery
    assert _missed_delivery(order.shipments[0]) in steps


def test_pickup_gives_the_point_the_deadline_the_id_and_who_may_collect(demo_session, settings):
    order = showcase(demo_session, "available_for_pickup")
    reply = ask(demo_session, settings, order, "can my husband collect it?")
    said = text_of(reply)
    assert "until" in said and "photo ID" in said and order.shipments[0].tracking_number in said
    assert "Someone else can collect it" in said
    not_there = ask(demo_session, settings, showcase(demo_session, "in_transit_on_time"), "where can I pick it up?")
    assert text_of(not_there).startswith("It isn't at a pickup point")


def test_customs_and_duties_follow_the_shops_policy(demo_session, settings):
    duties = settings.policy.duties
    held = [o for o in demo_session.scalars(select(Order)) if any(
        p.state.status == Status.EXCEPTION and p.state.delay_reason == "customs" for p in parcels(o, settings, NOW))]
    assert held, "the demo shop has a parcel at customs"
    at_customs = ask(demo_session, settings, held[0], "why customs? do I pay duties?")
    assert "customs" in text_of(at_customs) and duties in text_of(at_customs)
    elsewhere = ask(demo_session, settings, showcase(demo_session, "in_transit_on_time"), "do I have to pay duties?")
    assert "isn't held at customs" in text_of(elsewhere) and duties in text_of(elsewhere)


def test_a_booked_replacement_becomes_a_refund_until_it_is_carried_out(writable_demo, settings):
    order = showcase(writable_demo, "lost")
    parcel = claims.parcels(order, settings, NOW)[0]
    booked = claims.record_resolution(session=writable_demo, order=order, parcel=parcel,
                                      reason=ClaimReason.LOST.value, kind=ResolutionKind.RESHIP.value,
                                      conversation_id="rest:switch")
    booked.created_at = NOW - dt.timedelta(minutes=20)
    same = ask(writable_demo, settings, order, "actually I'd rather have a replacement")
    assert text_of(same).startswith("That's what you have") and booked.kind == ResolutionKind.RESHIP
    reply = ask(writable_demo, settings, order, "can I have a refund instead?")
    assert text_of(reply).startswith("Done: instead of the replacement, a refund of")
    row = writable_demo.scalars(select(Resolution).where(Resolution.id == booked.id)).one()
    assert row.kind == ResolutionKind.REFUND and row.amount == order.value
    assert writable_demo.scalars(select(AuditLog).where(AuditLog.action == "resolution.refund",
                                                       AuditLog.entity_id == order.number)).first() is not None
    later = NOW + dt.timedelta(hours=settings.policy.resolution_change_hours, minutes=1)
    too_late = ask(writable_demo, settings, order, "a replacement instead please", now=later)
    assert "can't change it myself" in text_of(too_late) and too_late.offer.response == OFFER_HUMAN
    assert writable_demo.scalars(select(Resolution).where(Resolution.id == booked.id)).one().kind == "refund"


def test_not_wanting_it_anymore_is_a_cancellation_or_a_return_not_a_claim(demo_session, settings):
    unshipped = ask(demo_session, settings, showcase(demo_session, "not_shipped"), "I don't want it anymore")
    assert "can still be cancelled" in text_of(unshipped) and unshipped.offer.response == OFFER_HUMAN
    delivered = ask(demo_session, settings, showcase(demo_session, "delivered"), "i dont want it anymore")
    assert "send it back for a refund until" in text_of(delivered)
    moving = ask(demo_session, settings, showcase(demo_session, "in_transit_on_time"),
                 "changed my mind, cancel my order")
    assert "can't be stopped now" in text_of(moving)


ALL_QUESTIONS = ("will it arrive by friday? is it lost? what do I do now? where can I pick it up? do I pay duties? "
                 "did my redirect go through? I don't want it anymore")


@pytest.mark.parametrize("days_later", [0, 2, 5, 9])
def test_no_follow_up_answer_gives_a_past_date_as_an_estimate(demo_session, settings, days_later):
    """Every demo order, every question, seeded for NOW and asked up to nine days on."""
    now = NOW + dt.timedelta(days=days_later)
    today = TODAY + dt.timedelta(days=days_later)
    wrong: List[str] = []
    for order in demo_session.scalars(select(Order).order_by(Order.number)):
        reply = ask(demo_session, settings, order, ALL_QUESTIONS, now=now)
        assert len(reply.messages) == 7, order.number
        for message in reply.messages:
            for sentence in message.split(". "):
                if any(w in sentence.lower() for w in ("expect", "should")) and any(
                        d < today for d in dates_in(sentence, today)):
                    wrong.append(f"{order.number}: {sentence}")
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("text, expected", [
    ("im not home today!! can you deliver tomorrow instead or send it to my work", [Topic.NOT_HOME]),
    ("can my neighbour take it", [Topic.NEIGHBOUR]),
    ("why was my order sent back??", [Topic.WHY]),
    ("i want to know WHY it got lost", [Topic.WHY]),
    ("what time will it come? I go out at 5", [Topic.TIME]),
    ("I'm in Berlin next week", []),
    ("can the driver leave it in the back garden", [Topic.SAFE_PLACE]),
    ("why did they lose it", [Topic.WHY]),
    ("they say they tried but I WAS HOME ALL DAY", [Topic.WAS_HOME]),
    ("so what happens if nobody is home??", [Topic.NOT_HOME]),
    ("and if they miss me what happens", [Topic.NOT_HOME]),
    ("can my old neighbour keep it for me", [Topic.NEIGHBOUR]),
])
def test_the_reviews_side_questions_are_found(text, expected):
    assert topics(text, TODAY) == expected


def test_not_home_gives_the_carriers_options_and_the_address_change(demo_session, settings):
    order = showcase(demo_session, "shipped_redirect_possible")
    reply = ask(demo_session, settings, order, "I won't be home, can you deliver it another day?")
    from bot.services.answers import _missed_delivery
    assert _missed_delivery(order.shipments[0]) in text_of(reply) and "another address" in text_of(reply)
    assert "nothing you need to do" not in text_of(reply).lower()


def test_why_it_was_sent_back_gives_the_carriers_reason(demo_session, settings):
    reply = ask(demo_session, settings, showcase(demo_session, "returned_to_sender"), "why was it sent back?")
    assert text_of(reply).startswith("UPS sent it back because of a problem with the delivery address")


def test_a_neighbour_may_take_it_in(demo_session, settings):
    reply = ask(demo_session, settings, showcase(demo_session, "out_for_delivery"), "can my neighbour take it in?")
    assert text_of(reply).startswith("Yes: anyone at the address can take it in")


def test_what_time_never_invents_a_slot(demo_session, settings):
    order = showcase(demo_session, "out_for_delivery")
    reply = ask(demo_session, settings, order, "what time will it come?")
    assert "doesn't give us a time slot" in text_of(reply) and order.shipments[0].tracking_number in text_of(reply)
    assert not re.search(r"\b\d{1,2}:\d{2}\b", text_of(reply))


def test_asking_to_switch_with_nothing_booked_checks_eligibility_first(writable_demo, settings):
    """"Nothing is booked, you can still choose" was followed by a refusal."""
    late = ask(writable_demo, settings, showcase(writable_demo, "late_no_reason"), "can I have a refund instead?")
    assert "can't have a refund or a replacement yet" in text_of(late)
    assert late.offer is None or late.offer.response != OFFER_CLAIM
    lost = ask(writable_demo, settings, showcase(writable_demo, "lost"), "can I have a refund instead?")
    assert "you can still choose" in text_of(lost) and lost.offer.response == OFFER_CLAIM


def test_a_booked_replacement_is_what_arrive_by_and_return_talk_about(writable_demo, settings):
    order = showcase(writable_demo, "damaged")
    parcel = claims.parcels(order, settings, NOW)[0]
    claims.record_resolution(session=writable_demo, order=order, parcel=parcel, reason=ClaimReason.DAMAGED.value,
                             kind=ResolutionKind.RESHIP.value, conversation_id="rest:booked")
    arrive = ask(writable_demo, settings, order, "will the replacement arrive by friday?")
    assert text_of(arrive).startswith("The replacement for order") and "damaged" not in text_of(arrive)
    cancel = ask(writable_demo, settings, order, "please cancel the replacement")
    assert "A replacement for order" in text_of(cancel) and cancel.offer.response == OFFER_HUMAN
    from bot.services.followups import booked_note
    assert booked_note(writable_demo, order, TODAY, ZoneInfo("Europe/Amsterdam")).startswith("A replacement was booked")


def test_a_disputed_missed_delivery_gets_an_apology_and_a_colleague(demo_session, settings):
    order = showcase(demo_session, "failed_attempt")
    reply = ask(demo_session, settings, order, "they say they tried but I WAS HOME ALL DAY")
    assert text_of(reply).startswith("I'm sorry: Royal Mail says they tried") and reply.offer.response == OFFER_HUMAN


def test_something_booked_just_after_midnight_in_the_shop_is_today_not_yesterday(writable_demo, settings):
    """Booked at 00:20 in Amsterdam (23:20 UTC the day before): "today" (a blind-review finding)."""
    from bot.services.followups import booked_note

    order = showcase(writable_demo, "damaged")
    parcel = claims.parcels(order, settings, NOW)[0]
    booked = claims.record_resolution(session=writable_demo, order=order, parcel=parcel,
                                      reason=ClaimReason.DAMAGED.value, kind=ResolutionKind.REFUND.value,
                                      conversation_id="rest:midnight")
    local_midnight = dt.datetime.combine(TODAY, dt.time(0, 20), tzinfo=settings.tz)
    booked.created_at = local_midnight.astimezone(dt.timezone.utc)
    writable_demo.flush()
    assert booked.created_at.date() == TODAY - dt.timedelta(days=1)  # the UTC date is the day before
    assert "was booked today" in booked_note(writable_demo, order, TODAY, settings.tz)


@pytest.mark.parametrize("text, heard, becomes", [
    ("keine Updates mehr bitte", "subscribe_updates", "unsubscribe_updates"),
    ("actually no. please stop sending me these", "deny", "unsubscribe_updates"),
    ("actually no, stop updates, I'll just check the tracking myself", "out_of_scope", "unsubscribe_updates"),
    ("non merci, pas de notifications", "thanks", "unsubscribe_updates"),
    ("si por favor keep me posted", "out_of_scope", "subscribe_updates"),
    ("hmm actually turn the updates back on", "unsubscribe_updates", "subscribe_updates"),
    ("can you keep me posted about WS-1008? ethan.peeters@example.com", "subscribe_updates", "order_status"),
    ("keep me posted", "subscribe_updates", "subscribe_updates"),
    ("stop the refund, I want a replacement", "refund_or_reship", "refund_or_reship"),
    # Another day is not another address; an address with a postcode is.
    ("im not home today!! can you deliver it tomorrow instead", "change_address", "ask_about_order"),
    ("send it to my office instead? Friedrichstraße 100, 10117 Berlin", "change_address", "change_address"),
    ("please deliver it to my office instead of my home", "change_address", "change_address"),
])
def test_consent_to_updates_is_read_from_the_words(text, heard, becomes):
    assert _classified(text, heard).get("intent")["name"] == becomes


def test_a_claim_settled_just_after_midnight_in_the_shop_is_dated_in_the_shops_zone(settings):
    from bot.services.claims import already_settled
    from bot.store.models import Resolution

    booked = Resolution(kind=ResolutionKind.RESHIP.value, amount=0, currency="EUR",
                        created_at=dt.datetime(2026, 12, 7, 23, 20, tzinfo=dt.timezone.utc))  # 00:20 on Tue 8 Dec
    _, wording = already_settled(booked, settings.tz)
    assert "Tue 8 Dec" in str(wording)
