"""The status and delay answers, composed from the demo shop at a fixed moment (SQLite and PostgreSQL).

What a shopper reads must never contradict itself: no estimate that has already
gone by, "late" once the promised date has passed, never "isn't late" for a
parcel past its promise or in trouble, the problem first, and a next step after
every problem.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from sqlalchemy import select

from bot.config import Settings, load_settings
from bot.domain.carriers import built_in_carrier
from bot.domain.enums import Status
from bot.domain.tracking import add_business_days
from bot.services.answers import Answer, delay_answer, parcels, reply_time, status_answer
from bot.store.demo import SCENARIOS, SHOWCASE_FIRST_NUMBER
from bot.store.models import Order
from bot.store.queries import get_order

from .conftest import NOW

TODAY = dt.date(2026, 11, 18)  # NOW in the shop's zone, a Wednesday

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DATE = re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (\d{1,2}) (" + "|".join(MONTHS) + r")\b")
#: Words that present a date as when the parcel should arrive.
ESTIMATE_WORDS = ("expect", "estimate")
#: Statuses in which a parcel is in trouble, whatever its dates say.
PROBLEMS = (Status.FAILED_ATTEMPT, Status.EXCEPTION, Status.LOST, Status.RETURNED_TO_SENDER)


def showcase(session, scenario: str) -> Order:
    order = get_order(session=session, number=f"WS-{SHOWCASE_FIRST_NUMBER + SCENARIOS.index(scenario)}")
    assert order is not None
    return order


def both(order: Order, settings: Settings, now: dt.datetime = NOW) -> Iterator[Tuple[str, Answer]]:
    yield "status", status_answer(order, settings, now)
    yield "delay", delay_answer(order, settings, now)


def said(answer: Answer) -> str:
    return "\n".join(answer.messages)


def dates_in(text: str, today: dt.date) -> List[dt.date]:
    """Every date the text names ("yesterday", "Fri 13 Nov"), each in the year closest to `today`."""
    found = [today - dt.timedelta(days=1)] * len(re.findall(r"\byesterday\b", text))
    for number, month in DATE.findall(text):
        candidates = [dt.date(year, MONTHS.index(month) + 1, int(number)) for year in (today.year - 1, today.year,
                                                                                       today.year + 1)]
        found.append(min(candidates, key=lambda d: abs((d - today).days)))
    return found


def past_estimates(answer: Answer, today: dt.date) -> List[str]:
    """Sentences that give a date before today as when the parcel is expected."""
    wrong = []
    for message in answer.messages:
        for sentence in re.split(r"(?<=[.!?])\s+", message):
            if any(word in sentence.lower() for word in ESTIMATE_WORDS) and any(
                    d < today for d in dates_in(sentence, today)):
                wrong.append(sentence)
    return wrong


def test_dates_are_read_as_the_answers_write_them():
    """The scanner itself: weekday dates, 'yesterday', and only sentences about an estimate count."""
    assert dates_in("Expected delivery: Fri 13 Nov. Last scan: yesterday at 09:00.", TODAY) == [
        dt.date(2026, 11, 17), dt.date(2026, 11, 13)]
    assert dates_in("Due Thu 31 Dec, then Fri 1 Jan", TODAY) == [dt.date(2026, 12, 31), dt.date(2027, 1, 1)]
    stale = Answer(("Order WS-1: It's on its way. Expected delivery: Fri 13 Nov. Last scan: Mon 16 Nov.",), False, None)
    assert past_estimates(stale, TODAY) == ["Expected delivery: Fri 13 Nov."]
    fine = Answer(("We promised it by Fri 13 Nov. UPS now expects it Fri 20 Nov.",), True, None)
    assert past_estimates(fine, TODAY) == []


# --- honest dates, for every demo order, today and on the days after ------------------------


@pytest.mark.parametrize("days_later", [0, 1, 3, 5, 8])
def test_no_answer_gives_a_date_already_gone_as_the_estimate(demo_session, settings, days_later):
    """Every demo order's status and delay answers, seeded for NOW and read up to three weeks on."""
    now = NOW + dt.timedelta(days=days_later)
    today = TODAY + dt.timedelta(days=days_later)
    wrong = {}
    for order in demo_session.scalars(select(Order).order_by(Order.number)):
        for job, answer in both(order, settings, now):
            stale = past_estimates(answer, today)
            if stale:
                wrong[f"{order.number} {job}"] = stale
    assert not wrong, f"estimates in the past on {today}: {dict(list(wrong.items())[:5])}"


@pytest.mark.parametrize("days_later", [0, 1, 3, 8])
def test_no_answer_calls_a_parcel_past_its_promise_or_in_trouble_not_late(demo_session, settings, days_later):
    """'isn't late' only for a parcel moving on time; a parcel past its promise is said to be late."""
    now = NOW + dt.timedelta(days=days_later)
    wrong = []
    for order in demo_session.scalars(select(Order).order_by(Order.number)):
        found = parcels(order, settings, now)
        past = [p for p in found if p.state.status not in (Status.DELIVERED, Status.AVAILABLE_FOR_PICKUP)
                and p.state.days_late > 0]
        trouble = [p for p in found if p.state.status in PROBLEMS or p.state.presumed_lost]
        for job, answer in both(order, settings, now):
            text = said(answer)
            if (past or trouble) and "isn't late" in text:
                wrong.append(f"{order.number} {job}: {text}")
            if past and "late" not in text.replace("isn't late", ""):
                wrong.append(f"{order.number} {job} never says late: {text}")
    assert not wrong, "\n".join(wrong[:5])


def test_an_estimate_gone_by_is_said_to_be_overdue(demo_session, settings):
    """Late, with the planned date gone and no new one: say so, and when a refund becomes possible."""
    order = showcase(demo_session, "late_no_reason")  # promised and planned Fri 13 Nov
    for _job, answer in both(order, settings):
        text = said(answer)
        assert "Fri 13 Nov" in text and "past the date we promised (Fri 13 Nov)" in text
        assert "hasn't given a new delivery date yet" in text
        assert "Expected delivery" not in text
        assert answer.messages[-1] == ("If it still isn't with you on Fri 20 Nov, tell me and we'll refund or "
                                       "replace it.")


def test_the_status_of_a_late_parcel_leads_with_it_and_apologises_like_the_delay_answer(demo_session, settings):
    """Late: 'is late' first, the carrier's reason and new estimate, the apology and the goodwill code.

    The estimate is the range the shop's history gives from the last scan (yesterday), stretched to the
    carrier's new date (Fri 20 Nov) so it never contradicts the carrier's tracking page.
    """
    order = showcase(demo_session, "late_with_reason")
    status, delay = status_answer(order, settings, NOW), delay_answer(order, settings, NOW)
    assert status.messages[0].startswith(f"Order {order.number} is late: it's 5 days past the date we promised "
                                         "(Fri 13 Nov).")
    assert "reported bad weather" in status.messages[0]
    assert "We now expect it between today and Fri 20 Nov." in status.messages[0]
    apology = "I'm sorry about the wait. As an apology, here is a discount code for your next order: SORRY10"
    assert apology in status.messages and apology in delay.messages
    assert status.goodwill_code == delay.goodwill_code == "SORRY10" and status.late and delay.late
    assert status.messages[-1] == delay.messages[-1]  # the same next step in both


@pytest.mark.parametrize("scenario, lead", [
    ("failed_attempt", "It's likely to be late: Royal Mail now expects it tomorrow, after the date we promised "
                       "(today)."),
    ("split_shipment", "is likely to be late: UPS now expects it Fri 20 Nov, after the date we promised "
                       "(tomorrow)."),
])
def test_an_estimate_after_the_promise_is_likely_to_be_late(demo_session, settings, scenario, lead):
    """Promised today or tomorrow, expected later: said plainly, with an apology, never 'isn't late'."""
    order = showcase(demo_session, scenario)
    for _job, answer in both(order, settings):
        text = said(answer)
        assert lead in text and "I'm sorry about the wait." in text and "isn't late" not in text
        assert answer.late


# --- the problem first, then the next step, for each status ------------------------------------

#: scenario: (what the first sentence says, the next step, the offer's response, the slot it sets)
NEXT_STEPS = {
    "failed_attempt": ("tried to deliver it yesterday at", "Book a redelivery at "
                       "https://www.royalmail.com/receiving-mail/redelivery", None, None),
    "available_for_pickup": ("waiting for you at a UPS pickup point: Market Square Newsagent", "UPS keeps it "
                             "there until Tue 24 Nov: bring photo ID and the tracking number", None, None),
    "stalled": ("is late", "A colleague can ask DHL to trace it. If it still isn't with you on Mon 23 Nov",
                "utter_offer_human", ("handoff_reason", "delivery_problem")),
    "exception": ("held at customs", "Customs checks parcels that cross a border before they can go on; DHL "
                  "delivers it once it's cleared. Prices include import duties; you won't be asked to pay "
                  "anything on delivery.", None, None),
    "lost": ("DHL has lost track of it", "We'll put it right: you can have a full refund or a free replacement.",
             "utter_offer_claim", ("claim_reason", "lost")),
    # Above the value the bot settles: a colleague, never a refund the claim would then refuse.
    "high_value_lost": ("There has been no scan from DHL since Wed 28 Oct (15 business days), so we treat it as "
                        "lost", "A colleague will sort out a refund or a replacement with you", "utter_offer_human",
                        ("handoff_reason", "high_value")),
    "damaged": ("DHL reported it damaged yesterday at", "you can have a refund or a replacement now. If it still "
                "reaches you, keep it and its packaging: a colleague will ask you for a photo of the damage.",
                "utter_offer_claim", ("claim_reason", "damaged")),
    "returned_to_sender": ("UPS sent it back to us Mon 16 Nov because of a problem with the delivery address",
                           "If that address is wrong, change it and we'll send the parcel again; if it's right, "
                           "choose a refund or a replacement.", "utter_offer_returned",
                           ("claim_reason", "not_received")),
}


@pytest.mark.parametrize("scenario", sorted(NEXT_STEPS))
def test_each_problem_leads_the_answer_and_a_next_step_ends_it(demo_session, settings, scenario):
    """Status and delay answers alike: the problem in the first sentence, the next step in the last message."""
    first, step, response, slot = NEXT_STEPS[scenario]
    order = showcase(demo_session, scenario)
    for job, answer in both(order, settings):
        opening = re.split(r"(?<=[.!?])\s+", answer.messages[0])[0]
        assert first in opening, f"{job}: {answer.messages[0]}"
        assert step in answer.messages[-1], f"{job}: {answer.messages[-1]}"
        if response is None:
            assert answer.offer is None
        else:
            assert answer.offer is not None and answer.offer.response == response
            assert getattr(answer.offer, slot[0]) == slot[1]


def test_the_pickup_point_deadline_follows_the_policy_or_else_the_carrier(demo_session, settings):
    """POLICY_PICKUP_HOLD_DAYS wins; without it each carrier's own hold time (UPS: 7 days) counts."""
    order = showcase(demo_session, "available_for_pickup")  # at the point since Tue 17 Nov
    assert built_in_carrier("ups").pickup_hold_days == 7
    assert "until Tue 24 Nov" in said(status_answer(order, settings, NOW))
    shorter = load_settings(environ={"POLICY_PICKUP_HOLD_DAYS": "3"}, env_file=Path("/nonexistent"))
    assert "until Fri 20 Nov" in said(status_answer(order, shorter, NOW))
    late = said(status_answer(order, shorter, NOW + dt.timedelta(days=4)))
    assert "was keeping it there until Fri 20 Nov, so it may be on its way back to us" in late
    assert "isn't late" not in said(delay_answer(order, settings, NOW))


def test_the_duties_policy_is_the_shops_own(demo_session):
    """POLICY_DUTIES replaces the default sentence in the customs answer."""
    shop = load_settings(environ={"POLICY_DUTIES": "Import duties are due on delivery; the carrier collects them."},
                         env_file=Path("/nonexistent"))
    text = said(status_answer(showcase(demo_session, "exception"), shop, NOW))
    assert "Import duties are due on delivery; the carrier collects them." in text
    assert "Prices include import duties" not in text


def test_each_carrier_has_its_own_words_after_a_missed_delivery():
    """Redelivery and collection in the carrier's terms, with its page where it has one."""
    assert "tools.usps.com/redelivery" in built_in_carrier("usps").missed_delivery
    assert "royalmail.com/receiving-mail/redelivery" in built_in_carrier("royalmail").missed_delivery
    assert "ServicePoint" in built_in_carrier("dhl").missed_delivery
    assert "Access Point" in built_in_carrier("ups").missed_delivery


@pytest.mark.parametrize("scenario, days_before, claim", [
    ("delivered_disputed", 0, True),  # a week ago: the claim is open
    ("delivered", 1, False),  # the day after delivery: wait for POLICY_DELIVERED_WAIT_DAYS
])
def test_delivered_but_not_received_gives_the_scan_then_the_checks_then_the_claim(demo_session, settings,
                                                                                   scenario, days_before, claim):
    """'It never came': the delivery scan's time and place, neighbours and safe places, then the claim."""
    order = showcase(demo_session, scenario)
    now = NOW - dt.timedelta(days=days_before)
    answer = delay_answer(order, settings, now)
    scan = parcels(order, settings, now)[0].state.status_scan
    local = scan.occurred_at.astimezone(settings.tz)
    assert "scanned it as delivered" in answer.messages[0] and f"{local:%H:%M}" in answer.messages[0]
    assert scan.location and scan.location in answer.messages[0]
    assert answer.messages[-1].startswith("If you can't find it, check with your neighbours")
    if claim:
        assert answer.offer is not None and (answer.offer.response, answer.offer.claim_reason) == (
            "utter_offer_claim", "not_received")
    else:
        assert answer.offer is None and "if it still isn't there tomorrow, tell me" in answer.messages[-1]


def test_on_time_parcels_keep_their_short_answers(demo_session, settings):
    """No apology, no next step, no offer: the estimate and the promise.

    The estimate is a range: the demo's DHL parcels arrive one or two weekdays after an in-transit scan
    (yesterday's), and the carrier's own date, tomorrow, is inside it.
    """
    order = showcase(demo_session, "in_transit_on_time")
    status, delay = status_answer(order, settings, NOW), delay_answer(order, settings, NOW)
    assert status.messages[0].startswith(f"Order {order.number}: It's on its way with DHL. Expected delivery: "
                                         "between today and tomorrow.")
    assert delay.messages == (f"Order {order.number} isn't late: it's on its way with DHL. Expected delivery: "
                              "between today and tomorrow. We promised it by Fri 20 Nov.",)
    assert status.offer is delay.offer is None and not status.late


def test_an_order_still_in_the_warehouse_past_its_promise_is_late(demo_session, settings):
    """Not shipped, and the promise gone by: late, an apology, and a colleague to check with the warehouse."""
    order = showcase(demo_session, "not_shipped")  # promised Mon 23 Nov
    later = NOW + dt.timedelta(days=7)  # Wed 25 Nov
    for _job, answer in both(order, settings, later):
        assert answer.messages[0].startswith(f"Order {order.number} hasn't shipped yet, so it's late: it's 2 days "
                                             "past the date we promised (Mon 23 Nov).")
        assert answer.messages[-1] == "A colleague can check with our warehouse when it will leave."
        assert answer.offer is not None and answer.offer.handoff_reason == "delivery_problem"
    assert "It isn't late" in said(delay_answer(order, settings, NOW))


def test_a_stalled_parcel_names_its_last_scan_and_when_a_claim_opens(demo_session, settings):
    """No scan since a given day; the claim opens on the earlier of late-enough and presumed lost."""
    order = showcase(demo_session, "stalled")  # last scan Wed 11 Nov, promised Mon 16 Nov
    state = parcels(order, settings, NOW)[0].state
    assert state.lost_on == add_business_days(dt.date(2026, 11, 11), settings.policy.lost_business_days)
    text = said(status_answer(order, settings, NOW))
    assert "There has been no scan from DHL since Wed 11 Nov (5 business days)." in text
    assert "on its way" not in text  # nothing says it moves
    assert "If it still isn't with you on Mon 23 Nov" in text  # 7 days late comes before Wed 25 Nov (lost)


# --- when a person answers ---------------------------------------------------------------------


@pytest.mark.parametrize("local, opening, expected", [
    (dt.datetime(2026, 11, 25, 22, 0), dt.datetime(2026, 11, 26, 9, 0), "from 09:00 tomorrow"),
    (dt.datetime(2026, 11, 26, 7, 0), dt.datetime(2026, 11, 26, 9, 0), "from 09:00 today"),
    (dt.datetime(2026, 11, 27, 22, 0), dt.datetime(2026, 11, 30, 9, 0), "from 09:00 on Mon 30 Nov"),
    (dt.datetime(2026, 11, 27, 22, 0), None, "as soon as we're back"),
])
def test_the_next_opening_reads_naturally(local, opening, expected):
    assert reply_time(local_now=local, opening=opening) == expected


def test_helpers_agree_with_the_fixed_moment():
    """NOW is a Wednesday afternoon in the shop's zone, as the demo timelines assume."""
    assert NOW.astimezone(load_settings(environ={}, env_file=Path("/nonexistent")).tz).date() == TODAY
    assert TODAY.weekday() == 2
