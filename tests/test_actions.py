"""The custom actions, against a real seeded store (SQLite and PostgreSQL).

Actions are driven through their three inputs (dispatcher, tracker, domain from
the real domain.yml) and judged by the events they return, the messages they
send and what they wrote to the store.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, Iterable, List, Optional

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import func, select

from actions.address import ActionSubmitAddress, ValidateAddressForm
from actions.claims import ActionSubmitClaim, ValidateClaimForm
from actions.context import ActionContext, context, use_context
from actions.handoff import ActionAffirm, ActionFallback, ActionHandoff
from actions.jobs import ActionContinueJob
from actions.verification import ActionRouteJob, ValidateVerifyForm
from bot.services.verification import is_verified, remember
from bot.store import db
from bot.store.models import (
    AddressChangeRequest,
    AuditLog,
    Handoff,
    Resolution,
    UpdateSubscription,
    VerificationAttempt,
)
from bot.store.queries import get_order

from .helpers.rasa import rendered
from .helpers.servers import ROOT

DOMAIN = yaml.safe_load((ROOT / "domain.yml").read_text())


_counter = iter(range(10**6))


def conversation() -> str:
    return f"conv-{next(_counter)}"


def tracker(text: str = "", intent: str = "inform", *, sender: Optional[str] = None,
            slots: Optional[Dict[str, Any]] = None, entities: Iterable[Dict[str, Any]] = (),
            requested_slot: Optional[str] = None, active_loop: Optional[str] = None,
            history: Iterable[Dict[str, Any]] = (), proven: bool = True,
            after: Iterable[Dict[str, Any]] = ()) -> Tracker:
    """A tracker as the action server receives it.

    With a `verified_order` slot and `proven`, the store also records that this
    conversation proved the order, as the verification form would have; with
    `proven=False` the slot is all there is, as in a forged tracker.
    """
    values = {name: None for name in DOMAIN["slots"]}
    values.update(slots or {})
    values["requested_slot"] = requested_slot
    latest = {"text": text, "intent": {"name": intent, "confidence": 0.99}, "entities": list(entities)}
    events = list(history) + [{"event": "user", "text": text, "parse_data": latest}] + list(after)
    sender = sender or conversation()
    if proven and values.get("verified_order"):
        prove(sender, values["verified_order"])
    return Tracker(sender, values, latest, events, False, None,
                   {"name": active_loop} if active_loop else {}, "action_listen")


def prove(sender: str, order_number: str) -> None:
    """Record in the store that `sender` proved `order_number` (what a passed verification leaves)."""
    ctx = context()
    ctx._transaction(lambda session: remember(session=session, conversation_id=sender, order_number=order_number,
                                              now=ctx.now()))


async def run(action, track: Tracker):
    dispatcher = CollectingDispatcher()
    events = await action.run(dispatcher, track, DOMAIN)
    return events, dispatcher.messages


def texts(messages: List[Dict[str, Any]]) -> str:
    """What the shopper reads: composed texts as they are, responses rendered from domain.yml with their variables."""
    return "\n".join(rendered(message, DOMAIN) for message in messages)


def slots_set(events) -> Dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def followup(events) -> Optional[str]:
    """The form the rules start next, as the action asked for it."""
    value = slots_set(events).get("next_form")
    return None if value in (None, "none") else value


async def verify(order: Dict[str, Any], proof: str, sender: Optional[str] = None):
    track = tracker(proof, "inform", sender=sender, slots={"order_number": order["order_number"]},
                    requested_slot="identity_proof", active_loop="verify_form")
    return await run(ValidateVerifyForm(), track)


async def answer(order: Dict[str, Any], job: str, *, proven: bool = True, **slots: Any):
    track = tracker("", "inform", slots={"verified_order": order["order_number"], "pending_job": job, **slots},
                    proven=proven)
    return await run(ActionContinueJob(), track)


# --- identifying the order ---------------------------------------------------------------


async def test_details_in_the_first_message_are_kept_and_nothing_is_said_yet(shop):
    """'where's 1043, jane@x.com' fills both details and starts the check, revealing nothing."""
    order = shop["orders"]["late_with_reason"]
    digits = order["order_number"].split("-")[1]
    events, messages = await run(ActionRouteJob(), tracker(f"where's {digits}, {order['email']}", "order_status"))
    assert slots_set(events)["order_number"] == order["order_number"]
    assert slots_set(events)["identity_proof"] == order["email"]
    assert slots_set(events)["pending_job"] == "status"
    assert messages == []


async def test_the_right_email_or_postcode_verifies(shop):
    """Either proof works; the order is then marked verified by the action."""
    order = shop["orders"]["delivered"]
    events, messages = await verify(order, order["email"].upper())
    assert slots_set(events)["verified_order"] == order["order_number"]
    assert messages == [{"response": "utter_verified"} | _empty(messages[0])]
    events, _ = await verify(order, f"postcode is {order['postcode'].lower().replace(' ', '')}")
    assert slots_set(events)["verified_order"] == order["order_number"]


def _empty(message: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in message.items() if k != "response"}


async def test_a_wrong_proof_gets_the_same_neutral_answer_whether_or_not_the_order_exists(shop):
    """Nothing reveals whether an order number exists."""
    real = shop["orders"]["delivered"]
    fake = {**real, "order_number": "WS-99999"}
    real_events, real_messages = await verify(real, "someone@example.net")
    fake_events, fake_messages = await verify(fake, real["email"])
    assert real_messages == fake_messages
    assert [m.get("response") for m in real_messages] == ["utter_proof_mismatch"]
    for events in (real_events, fake_events):
        assert slots_set(events).get("verified_order") is None
        # The proof is asked again; the order number stays (a new one replaces it), whether or not it exists.
        assert slots_set(events)["identity_proof"] is None and "order_number" not in slots_set(events)


async def test_three_failures_in_a_conversation_lock_it(shop):
    """After the third wrong proof the conversation stops trying, even with the right proof."""
    order, sender = shop["orders"]["in_transit_on_time"], conversation()
    for _ in range(2):
        _, messages = await verify(order, "wrong@example.net", sender)
        assert messages[0]["response"] == "utter_proof_mismatch"
    events, messages = await verify(order, "wrong@example.net", sender)
    assert messages[0]["response"] == "utter_locked_out"
    assert slots_set(events)["locked_out"] is True
    events, messages = await verify(order, order["email"], sender)
    assert messages[0]["response"] == "utter_locked_out"
    assert "verified_order" not in slots_set(events)


async def test_strangers_guessing_an_order_never_lock_the_owner_out(shop, settings):
    """Failures from many conversations pause the order's postcode; the owner's email still verifies."""
    order = shop["orders"]["out_for_delivery"]
    for _ in range(settings.policy.verify_max_failures_per_order_hour):
        await verify(order, "guess@example.net", conversation())
    events, messages = await verify(order, order["email"], conversation())
    assert messages[0]["response"] == "utter_verified"
    assert slots_set(events)["verified_order"] == order["order_number"]
    events, messages = await verify(order, f"my postcode is {order['postcode']}", conversation())
    assert messages[0]["response"] == "utter_proof_need_email" and "verified_order" not in slots_set(events)
    assert "email address" in texts(messages)


async def test_a_guessed_email_stops_proving_anything_and_the_shopper_is_told_why(shop, settings):
    """Past the shop-wide limit for one email, even its own order is refused, with the way out."""
    victim = shop["orders"]["returned_to_sender"]
    others = [o for o in shop["orders"].values() if o["email"] != victim["email"]]
    for other in others[:settings.policy.verify_max_failures_per_email_hour]:
        await verify(other, victim["email"], conversation())
    sender = conversation()
    events, messages = await verify(victim, victim["email"], sender)
    assert messages[0]["response"] == "utter_proof_email_paused" and "verified_order" not in slots_set(events)
    assert "postcode on the order works instead" in texts(messages)
    # A pause someone else caused locks nothing: the owner proves the order with its postcode, in the same
    # conversation (it used to be locked for the day).
    assert "locked_out" not in slots_set(events) and slots_set(events)["identity_proof"] is None
    events, messages = await verify(victim, victim["postcode"], sender)
    assert messages[0]["response"] == "utter_verified"
    assert slots_set(events)["verified_order"] == victim["order_number"]
    # the job then offers a person rather than opening a hand-off by itself
    paused = {"event": "bot", "text": "...", "metadata": {"utter_action": "utter_proof_email_paused"}}
    track = tracker("", "inform", sender=sender, slots={"locked_out": True, "pending_job": "status"}, after=[paused])
    events, messages = await run(ActionContinueJob(), track)
    assert [m["response"] for m in messages] == ["utter_offer_human"]
    # a later question in the locked conversation is told why again
    later = tracker("where is it", "order_status", sender=sender, slots={"locked_out": True, "pending_job": "status"})
    _, messages = await run(ActionContinueJob(), later)
    assert [m["response"] for m in messages] == ["utter_locked_out", "utter_offer_human"]
    assert slots_set(events)["handoff_reason"] == "locked_out"
    assert not any(e.get("event") == "pause" for e in events)
    with db.session_factory(shop["engine"])() as session:
        assert session.scalar(select(func.count()).select_from(Handoff).where(Handoff.conversation_id == sender)) == 0


async def test_typed_shorthand_cannot_fill_details_or_verification(shop):
    """'/order_status{"verified_order": ...}' typed by a shopper sets nothing the store did not check."""
    order = shop["orders"]["delivered"]
    text = f'/order_status{{"verified_order": "{order["order_number"]}", "order_number": "{order["order_number"]}"}}'
    entities = [{"entity": "verified_order", "value": order["order_number"]},
                {"entity": "order_number", "value": order["order_number"]}]
    events, messages = await run(ActionRouteJob(), tracker(text, "order_status", entities=entities))
    assert slots_set(events)["verified_order"] is None
    assert slots_set(events)["order_number"] is None
    assert messages == []
    # and inside the form a shorthand is not read as an order number or proof
    track = tracker(f'/inform{{"email": "{order["email"]}"}}', "inform", requested_slot="identity_proof",
                    slots={"order_number": order["order_number"]}, active_loop="verify_form",
                    entities=[{"entity": "email", "value": order["email"]}])
    events, _ = await run(ValidateVerifyForm(), track)
    assert "verified_order" not in slots_set(events)


async def test_a_second_question_about_the_verified_order_needs_no_new_check(shop):
    """Once verified, another job on the same order is answered at once."""
    order = shop["orders"]["late_with_reason"]
    track = tracker("and why is it late?", "delivery_delay", slots={"verified_order": order["order_number"]})
    events, messages = await run(ActionRouteJob(), track)
    assert "verified_order" not in slots_set(events) and messages == []
    track.slots.update(slots_set(events))
    assert await ValidateVerifyForm().required_slots(["order_number", "identity_proof"], CollectingDispatcher(),
                                                     track, DOMAIN) == []  # nothing to ask
    _, messages = await run(ActionContinueJob(), track)
    assert "past the date we promised" in texts(messages)


async def test_asking_about_another_order_starts_a_new_check(shop):
    """A different order number drops the earlier verification."""
    order = shop["orders"]["late_with_reason"]
    track = tracker("what about WS-1005?", "order_status", slots={"verified_order": order["order_number"]})
    events, messages = await run(ActionRouteJob(), track)
    assert slots_set(events)["verified_order"] is None
    assert slots_set(events)["order_number"] == "WS-1005"
    assert messages == []


async def test_another_question_during_the_check_keeps_the_order_number_given(shop):
    """'Why is it late?' while the proof is being asked for switches the job, not the order."""
    order = shop["orders"]["late_no_reason"]
    track = tracker("why is it late?", "delivery_delay", slots={"order_number": order["order_number"]},
                    requested_slot="identity_proof", active_loop="verify_form")
    events, messages = await run(ActionRouteJob(), track)
    assert slots_set(events)["order_number"] == order["order_number"]
    assert slots_set(events)["pending_job"] == "delay" and slots_set(events)["verified_order"] is None
    assert messages == []


async def test_the_postcode_given_with_the_asked_order_number_is_read_too(shop):
    """Asked for the order number, 'order 1009, postcode 1015 CW' verifies in one go."""
    order = shop["orders"]["late_no_reason"]
    digits = order["order_number"].split("-")[1]
    track = tracker(f"it's order {digits}, my postcode is {order['postcode']}", "inform",
                    requested_slot="order_number", active_loop="verify_form")
    events, messages = await run(ValidateVerifyForm(), track)
    assert slots_set(events)["verified_order"] == order["order_number"]
    assert "utter_verified" in [m.get("response") for m in messages]


# --- status and delay ----------------------------------------------------------------------

#: scenario: (words the status answer must contain, the response it ends with)
#: A parcel still on its way ends with the offer of updates; one not shipped or delivered with "anything else?".
STATUS_WORDS = {
    "not_shipped": ("hasn't shipped yet", "utter_anything_else"),
    "info_received": ("label is ready", "utter_offer_updates"),
    "in_transit_on_time": ("on its way", "utter_offer_updates"),
    "out_for_delivery": ("out for delivery", "utter_offer_updates"),
    "delivered": ("delivered it", "utter_anything_else"),
    "failed_attempt": ("tried to deliver it", "utter_offer_updates"),
    "available_for_pickup": ("pickup point", "utter_offer_updates"),
    "late_with_reason": ("on its way", "utter_offer_updates"),
    "late_no_reason": ("on its way", "utter_offer_updates"),
    "stalled": ("no scan from", "utter_offer_human"),  # a colleague asks the carrier to trace it
    "exception": ("a customs check", "utter_offer_updates"),
    "lost": ("lost track of it", "utter_offer_claim"),
    "damaged": ("reported it damaged", "utter_offer_claim"),
    "delivered_disputed": ("delivered it", "utter_anything_else"),
    "returned_to_sender": ("sent it back to us", "utter_offer_returned"),
    "split_shipment": ("ships in 2 parcels", "utter_offer_updates"),
    "shipped_redirect_possible": ("on its way", "utter_offer_updates"),
    "shipped_no_redirect": ("on its way", "utter_offer_updates"),
    "high_value_lost": ("we treat it as lost", "utter_offer_human"),
}


@pytest.mark.parametrize("scenario", sorted(STATUS_WORDS))
async def test_status_answer_states_the_facts_of_each_scenario(shop, scenario):
    """Plain-words status, the carrier, every parcel's tracking link, and what the shopper can do next."""
    order = shop["orders"][scenario]
    _, messages = await answer(order, "status")
    said = texts(messages)
    words, last = STATUS_WORDS[scenario]
    assert words in said
    for number in order["tracking_numbers"]:
        assert number in said  # inside the tracking URL
    if order["tracking_numbers"]:
        assert "Last scan:" in said
    assert messages[-1]["response"] == last


@pytest.mark.parametrize("scenario, job, response, slot, value", [
    ("lost", "status", "utter_offer_claim", "claim_reason", "lost"),
    ("damaged", "delay", "utter_offer_claim", "claim_reason", "damaged"),
    ("delivered_disputed", "delay", "utter_offer_claim", "claim_reason", "not_received"),  # "it never came"
    ("returned_to_sender", "status", "utter_offer_returned", "claim_reason", "not_received"),
    ("stalled", "delay", "utter_offer_human", "handoff_reason", "delivery_problem"),
])
async def test_a_problem_answer_ends_with_buttons_for_the_next_step(shop, scenario, job, response, slot, value):
    """The offer's buttons use existing intents; the slot remembers what they are for."""
    events, messages = await answer(shop["orders"][scenario], job)
    assert messages[-1]["response"] == response
    buttons = DOMAIN["responses"][response][0]["buttons"]
    intents = {b["payload"].lstrip("/").split("{")[0] for b in buttons}
    assert intents <= {next(iter(i)) if isinstance(i, dict) else i for i in DOMAIN["intents"]}
    assert slots_set(events)[slot] == value


async def test_a_parcel_sent_back_can_get_a_new_address_then_a_replacement(shop):
    """Returned to us: the address can be changed directly, then a replacement or refund is offered."""
    order = shop["orders"]["returned_to_sender"]
    events, messages = await answer(order, "address")
    assert followup(events) == "address_form" and messages[0]["response"] == "utter_address_returned"
    assert "came back to us" in texts(messages)
    slots = {"verified_order": order["order_number"], "new_street": "Torstraße 1", "new_city": "Berlin",
             "new_postcode": "10119", "new_country": "Germany", "address_confirmed": True}
    events, messages = await run(ActionSubmitAddress(), tracker("yes", "affirm", slots=slots))
    assert [m.get("response") for m in messages] == ["utter_address_changed", "utter_offer_claim"]
    assert slots_set(events)["claim_reason"] == "not_received"
    events, messages = await answer(order, "claim", claim_reason="not_received")
    assert followup(events) == "claim_form" and "refund or a free replacement" in texts(messages)


async def test_delay_answer_gives_lateness_reason_new_estimate_and_goodwill(shop, settings):
    """A late parcel: days late, the carrier's reason, the new estimate, an apology and the code."""
    _, messages = await answer(shop["orders"]["late_with_reason"], "delay")
    said = texts(messages)
    assert "is late: it's" in said and "days past the date we promised" in said
    assert "reported bad weather." in said
    assert "We now expect it" in said  # the shop's range, taking in the carrier's new date
    assert "I'm sorry" in said and settings.policy.goodwill_code in said


@pytest.mark.parametrize(
    "scenario, phrase",
    [
        ("late_no_reason", "hasn't given a reason."),
        ("stalled", "(5 business days)."),
        ("in_transit_on_time", "isn't late"),
        ("delivered", "on time"),
    ],
)
async def test_delay_answer_without_a_reason_or_without_a_delay(shop, scenario, phrase):
    """No invented reason; an on-time parcel is said to be on time."""
    _, messages = await answer(shop["orders"][scenario], "delay")
    assert phrase in texts(messages)


async def test_a_parcel_waiting_at_the_pickup_point_is_not_given_a_past_estimate(shop):
    """'Why isn't it here?' about a parcel at the pickup point: it's there, no stale 'expected' date."""
    _, messages = await answer(shop["orders"]["available_for_pickup"], "delay")
    said = texts(messages)
    assert "in time for the date we promised" in said and "pickup point" in said and "expected" not in said
    assert "photo ID" in said


async def test_presumed_lost_delay_offers_refund_or_reship(shop):
    """Past the lost threshold the delay answer offers the claim with buttons."""
    events, messages = await answer(shop["orders"]["lost"], "delay")
    offer = messages[-1]
    assert offer["response"] == "utter_offer_claim" and DOMAIN["responses"]["utter_offer_claim"][0]["buttons"]
    assert "refund or a replacement" in texts([offer])
    assert slots_set(events)["claim_reason"] == "lost"


async def test_a_lost_order_above_the_bots_limit_offers_a_colleague_not_a_refund(shop):
    """The claim would go to a person: the answer says so instead of offering a choice it would then refuse."""
    events, messages = await answer(shop["orders"]["high_value_lost"], "delay")
    assert messages[-1]["response"] == "utter_offer_human" and "above the value" in texts(messages)
    assert slots_set(events)["handoff_reason"] == "high_value" and "claim_reason" not in slots_set(events)


# --- address change -----------------------------------------------------------------------


async def test_address_change_before_shipment_is_direct_and_audited(shop):
    """Not shipped: the form collects the address, and confirming writes it with an audit row."""
    order = shop["orders"]["not_shipped"]
    events, messages = await answer(order, "address")
    assert followup(events) == "address_form"
    assert "change the address directly" in texts(messages)
    assert "@" not in texts(messages)
    slots = {"verified_order": order["order_number"], "new_street": "Prinsengracht 263", "new_city": "Amsterdam",
             "new_postcode": "1016 GV", "new_country": "Netherlands", "address_confirmed": True}
    _, messages = await run(ActionSubmitAddress(), tracker("yes", "affirm", slots=slots))
    assert "Done" in texts(messages) and "Prinsengracht 263" in texts(messages)
    with db.session_factory(shop["engine"])() as session:
        stored = get_order(session=session, number=order["order_number"])
        assert (stored.ship_line1, stored.ship_postcode, stored.ship_country) == ("Prinsengracht 263", "1016 GV", "NL")
        change = session.scalars(select(AddressChangeRequest).where(AddressChangeRequest.order_id == stored.id)).one()
        assert (change.kind, change.state, change.new_address["city"]) == ("direct", "applied", "Amsterdam")
        assert session.scalars(select(AuditLog).where(AuditLog.action == "address.applied",
                                                      AuditLog.entity_id == order["order_number"])).first()


async def test_after_shipment_a_redirect_is_requested_where_the_carrier_supports_it(shop):
    """In transit with UPS: a redirect request is recorded; the order's address is not rewritten."""
    order = shop["orders"]["shipped_redirect_possible"]
    events, messages = await answer(order, "address")
    assert followup(events) == "address_form" and "redirect" in texts(messages)
    slots = {"verified_order": order["order_number"], "new_street": "Torstraße 1", "new_city": "Berlin",
             "new_postcode": "10119", "new_country": "Germany", "address_confirmed": True}
    _, messages = await run(ActionSubmitAddress(), tracker("yes", "affirm", slots=slots))
    assert "asked the carrier to redirect" in texts(messages)
    with db.session_factory(shop["engine"])() as session:
        stored = get_order(session=session, number=order["order_number"])
        assert stored.ship_line1 != "Torstraße 1"
        change = session.scalars(select(AddressChangeRequest).where(AddressChangeRequest.order_id == stored.id)).one()
        assert (change.kind, change.state) == ("redirect", "requested")


async def test_without_redirect_support_it_explains_and_offers_a_person(shop):
    """Royal Mail cannot redirect: no form, an explanation and the offer of a human."""
    events, messages = await answer(shop["orders"]["shipped_no_redirect"], "address")
    assert followup(events) is None
    assert "can't redirect" in texts(messages)
    assert messages[-1]["response"] == "utter_offer_human"


@pytest.mark.parametrize(
    "slots, bad_slot, phrase",
    [
        ({"new_street": "Damrak 1", "new_city": "Amsterdam", "new_postcode": "12345"}, "new_postcode",
         "postcode doesn't look valid for NL"),  # Dutch postcodes are 1234 AB
        ({"new_street": "Damrak 1", "new_city": "Amsterdam", "new_postcode": "1012 LG"}, "new_country",
         "don't recognise that country"),
    ],
)
async def test_address_validation_names_the_problem_and_asks_again(shop, slots, bad_slot, phrase):
    """A postcode of the wrong format or an unknown country is refused with a reason."""
    country = "Netherlands" if bad_slot == "new_postcode" else "Atlantis"
    track = tracker(country, "inform", slots=slots, requested_slot="new_country", active_loop="address_form")
    track.slots["new_country"] = country
    dispatcher = CollectingDispatcher()
    result = ValidateAddressForm().validate_new_country(country, dispatcher, track, DOMAIN)
    assert result[bad_slot] is None
    assert phrase in texts(dispatcher.messages)


async def test_saying_no_at_the_confirmation_starts_the_address_again(shop):
    """A correction: 'no' clears the new address so it is collected again."""
    dispatcher = CollectingDispatcher()
    result = ValidateAddressForm().validate_address_confirmed(False, dispatcher, tracker("no", "deny"), DOMAIN)
    assert all(value is None for value in result.values()) and "new_street" in result


# --- refund or reship ----------------------------------------------------------------------


async def test_lost_parcel_refund_is_recorded_once_however_often_asked(shop):
    """Eligible: the shopper chooses, one resolution is stored, asking again never pays twice."""
    order = shop["orders"]["lost"]
    events, messages = await answer(order, "claim", claim_reason="lost")
    assert followup(events) == "claim_form" and "refund or a free replacement" in texts(messages)
    slots = {"verified_order": order["order_number"], "claim_reason": "lost", "resolution_choice": "refund",
             "delivery_checked": True}
    _, messages = await run(ActionSubmitClaim(), tracker("refund", "inform", slots=slots))
    assert "refund of" in texts(messages)
    _, again = await run(ActionSubmitClaim(), tracker("refund", "inform", slots=slots))
    assert "already settled" in texts(again)
    with db.session_factory(shop["engine"])() as session:
        stored = get_order(session=session, number=order["order_number"])
        rows = session.scalars(select(Resolution).where(Resolution.order_id == stored.id)).all()
        assert [(r.kind, r.reason, r.amount) for r in rows] == [("refund", "lost", stored.value)]


async def test_high_value_claim_goes_to_a_person_with_a_handoff_record(shop):
    """Above the value threshold the bot records a handoff instead of paying."""
    order = shop["orders"]["high_value_lost"]
    track = tracker("it never came", "refund_or_reship", slots={"verified_order": order["order_number"],
                                                                 "pending_job": "claim", "claim_reason": "lost"})
    events, messages = await run(ActionContinueJob(), track)
    assert "colleague" in texts(messages) and messages[-1]["response"].startswith("utter_handoff")
    with db.session_factory(shop["engine"])() as session:
        handoff = session.scalars(select(Handoff).where(Handoff.conversation_id == track.sender_id)).one()
        assert handoff.reason == "high_value" and order["order_number"] in handoff.summary
        assert handoff.transcript[-1]["text"] == "it never came"
        assert session.scalar(select(func.count()).select_from(Resolution)
                              .where(Resolution.order_id == handoff.order_id)) == 0


async def test_not_received_waits_for_the_policy_then_is_eligible(shop):
    """Delivered a week ago and not received: eligible; a parcel still moving is not."""
    events, _ = await answer(shop["orders"]["delivered_disputed"], "claim", claim_reason="not_received")
    assert followup(events) == "claim_form"
    events, messages = await answer(shop["orders"]["in_transit_on_time"], "claim", claim_reason="not_received")
    assert followup(events) is None and "not late enough to claim" in texts(messages)


async def test_a_repeat_claim_goes_to_a_person(shop):
    """A second claim by the same shopper within the window is handed over."""
    first, second = shop["orders"]["damaged"], shop["orders"]["returned_to_sender"]
    slots = {"verified_order": first["order_number"], "claim_reason": "damaged", "resolution_choice": "reship",
             "delivery_checked": True}
    _, messages = await run(ActionSubmitClaim(), tracker("new one please", "inform", slots=slots))
    assert f"replacement for order {first['order_number']} is booked" in texts(messages)
    with db.session_scope(shop["engine"]) as session:  # the same shopper's other order
        other = get_order(session=session, number=shop["orders"]["delivered_disputed"]["order_number"])
        get_order(session=session, number=first["order_number"]).customer_id = other.customer_id
    events, messages = await answer(shop["orders"]["delivered_disputed"], "claim", claim_reason="not_received")
    assert "earlier claim" in texts(messages) and messages[-1]["response"].startswith("utter_handoff")
    assert second  # the returned order is untouched by this test


async def test_the_claim_form_reads_the_choice_from_words_or_buttons(shop):
    """'my money back' means refund, 'send a new one' reship, a button payload its entity."""
    form = ValidateClaimForm()
    for text, entities, expected in [("I'd like my money back", [], "refund"), ("send a new one", [], "reship"),
                                     ("/inform", [{"entity": "resolution_choice", "value": "reship"}], "reship")]:
        track = tracker(text, "inform", entities=entities, requested_slot="resolution_choice",
                        active_loop="claim_form")
        assert await form.extract_resolution_choice(CollectingDispatcher(), track, DOMAIN) == {
            "resolution_choice": expected}


# --- failures and handoff ------------------------------------------------------------------


async def test_a_store_failure_ends_in_an_apology_and_an_offer_of_a_person(shop, monkeypatch):
    """With the store unreachable the shopper still gets a polite answer, never silence."""
    unreachable = db.session_factory(db.make_engine("postgresql://nobody@127.0.0.1:1/none"))
    with use_context(ActionContext(settings=shop["settings"], sessions=unreachable)):
        _, messages = await answer(shop["orders"]["delivered"], "status", proven=False)
    assert [m["response"] for m in messages] == ["utter_sorry_error", "utter_offer_human"]


async def test_two_misunderstandings_in_a_row_offer_a_person(shop):
    """The first miss asks to rephrase; the second offers a human."""
    miss = {"event": "user", "text": "blorp", "parse_data": {"intent": {"name": "nlu_fallback"}}}
    _, first = await run(ActionFallback(), tracker("blorp", "nlu_fallback"))
    assert first[0]["response"] == "utter_default"
    _, second = await run(ActionFallback(), tracker("blorp again", "nlu_fallback", history=[miss]))
    assert second[-1]["response"] == "utter_offer_human"


@pytest.mark.parametrize("text", ["got charged 2x 49,95 for ws 1186, where is it", "Bestellung WS-1003 wo ist sie",
                                  "1Z999AA10123456784"])
async def test_a_message_naming_an_order_is_read_again_as_that_order(shop, text):
    """Whatever the model made of it, a message with an order or tracking number goes into the order flow."""
    track = tracker(text, "nlu_fallback")
    events, messages = await run(ActionFallback(), track)
    assert messages == []
    assert [e["event"] for e in events] == ["rewind", "action", "user"]
    assert events[1]["name"] == "action_listen"
    assert events[2]["text"] == text and events[2]["parse_data"]["intent"]["name"] == "inform"


@pytest.mark.parametrize("text", ["what is 15 times 230", "call me on 0612345678", "/human_handoff"])
async def test_a_message_without_an_order_is_not_read_again(shop, text):
    events, messages = await run(ActionFallback(), tracker(text, "nlu_fallback"))
    assert not any(e["event"] == "rewind" for e in events)
    assert messages[0]["response"] == "utter_default"


async def test_asking_for_a_person_records_one_handoff(shop):
    """The handoff holds the channel, reason, verified order and transcript, once per conversation."""
    order = shop["orders"]["stalled"]
    track = tracker("let me talk to a person", "human_handoff", slots={"verified_order": order["order_number"]})
    await run(ActionHandoff(), track)
    await run(ActionHandoff(), track)
    with db.session_factory(shop["engine"])() as session:
        handoffs = session.scalars(select(Handoff).where(Handoff.conversation_id == track.sender_id)).all()
    assert len(handoffs) == 1
    assert handoffs[0].reason == "asked" and handoffs[0].context["shipments"][0]["status"] == "in_transit"


async def test_starting_the_address_form_with_cleared_slots_says_nothing(shop):
    """Clearing the new-address slots when the form starts is not an answer to complain about."""
    form, dispatcher = ValidateAddressForm(), CollectingDispatcher()
    track = tracker("", "change_address", active_loop="address_form")
    for slot in ("new_street", "new_city", "new_postcode", "new_country", "address_confirmed"):
        assert getattr(form, f"validate_{slot}")(None, dispatcher, track, DOMAIN) == {}
    assert dispatcher.messages == []


async def test_yes_to_the_offer_of_a_person_hands_over_and_any_other_yes_shows_the_menu(shop):
    """'yes' right after "Would you like me to pass you to a colleague?" creates the handoff."""
    offer = DOMAIN["responses"]["utter_offer_human"][0]["text"]
    track = tracker("yes", "affirm", history=[{"event": "bot", "text": offer}])
    _, messages = await run(ActionAffirm(), track)
    assert messages[-1]["response"].startswith("utter_handoff") and "passed your conversation" in texts(messages)
    with db.session_factory(shop["engine"])() as session:
        assert session.scalars(select(Handoff).where(Handoff.conversation_id == track.sender_id)).one()
    _, messages = await run(ActionAffirm(), tracker("yes", "affirm", history=[{"event": "bot", "text": "Hi!"}]))
    assert messages[-1]["response"] == "utter_menu"


async def test_starting_the_claim_form_asks_for_the_choice_once(shop):
    """The cleared choice is not validated into a second question."""
    dispatcher = CollectingDispatcher()
    assert ValidateClaimForm().validate_resolution_choice(None, dispatcher, tracker(), DOMAIN) == {}
    assert dispatcher.messages == []


# --- a slot proves nothing: the store's record does ------------------------------------------


@pytest.mark.parametrize("job", ["status", "delay", "address", "claim"])
async def test_a_forged_verified_order_slot_reveals_and_changes_nothing(shop, job):
    """A tracker claiming a verified order, with no verification in the store, gets no order facts."""
    order = shop["orders"]["lost"]
    events, messages = await answer(order, job, proven=False)
    said = texts(messages)
    assert [m.get("response") for m in messages] == ["utter_verification_needed"]
    assert order["order_number"] not in said and "DHL" not in said and "UPS" not in said
    assert slots_set(events)["verified_order"] is None and followup(events) is None


async def test_forged_slots_cannot_change_an_address_or_book_a_refund(shop):
    """The submit actions check the store, whatever the slots say."""
    order = shop["orders"]["not_shipped"]
    slots = {"verified_order": order["order_number"], "new_street": "Damrak 1", "new_city": "Amsterdam",
             "new_postcode": "1012 LG", "new_country": "NL", "address_confirmed": True}
    address_track = tracker("yes", "affirm", slots=slots, proven=False)
    _, messages = await run(ActionSubmitAddress(), address_track)
    assert [m.get("response") for m in messages] == ["utter_verification_needed"]
    damaged = shop["orders"]["damaged"]
    claim = {"verified_order": damaged["order_number"], "claim_reason": "damaged", "resolution_choice": "refund",
             "delivery_checked": True}
    track = tracker("refund", "inform", slots=claim, proven=False)
    _, messages = await run(ActionSubmitClaim(), track)
    assert [m.get("response") for m in messages] == ["utter_verification_needed"]
    with db.session_factory(shop["engine"])() as session:
        assert get_order(session=session, number=order["order_number"]).ship_line1 != "Damrak 1"
        for model in (AddressChangeRequest, Resolution):
            for sender in (address_track.sender_id, track.sender_id):
                assert session.scalar(select(func.count()).select_from(model)
                                      .where(model.conversation_id == sender)) == 0


async def test_an_unproven_slot_sends_the_shopper_back_through_the_check(shop):
    """A lapsed (or forged) verification: the route keeps the order number and asks for the proof again."""
    order = shop["orders"]["delivered"]
    track = tracker("where is it?", "order_status", slots={"verified_order": order["order_number"],
                                                          "order_number": order["order_number"]}, proven=False)
    events, messages = await run(ActionRouteJob(), track)
    assert [m.get("response") for m in messages] == ["utter_check_again"]
    assert slots_set(events)["verified_order"] is None and slots_set(events)["identity_proof"] is None
    assert slots_set(events)["order_number"] == order["order_number"]


async def test_a_verification_lapses_after_the_ttl_without_a_message(shop):
    """With the clock moved past VERIFICATION_TTL_MINUTES the same conversation must prove it again."""
    order = shop["orders"]["delivered"]
    sender = conversation()
    prove(sender, order["order_number"])
    base = context()
    ttl = base.settings.verification_ttl_minutes
    later = ActionContext(settings=base.settings, sessions=base.sessions,
                          clock=lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=ttl + 1))
    with use_context(later):
        track = tracker("", "inform", sender=sender, proven=False,
                        slots={"verified_order": order["order_number"], "pending_job": "status"})
        _, messages = await run(ActionContinueJob(), track)
    assert [m.get("response") for m in messages] == ["utter_verification_needed"]


async def test_a_new_session_ends_the_verification_and_does_not_carry_it_over(shop):
    """action_session_start revokes the store's record and drops the proof slots, keeping the rest."""
    from actions.session import ActionSessionStart

    order = shop["orders"]["delivered"]
    track = tracker("", "inform", slots={"verified_order": order["order_number"],
                                         "order_number": order["order_number"], "identity_proof": order["email"],
                                         "pending_job": "status"})
    events, _ = await run(ActionSessionStart(), track)
    assert events[0]["event"] == "session_started"
    assert (events[-1]["event"], events[-1]["name"]) == ("action", "action_listen")
    carried = slots_set(events)
    assert "verified_order" not in carried and "identity_proof" not in carried
    assert carried["order_number"] == order["order_number"] and carried["pending_job"] == "status"
    with_same_sender = tracker("", "inform", sender=track.sender_id, proven=False,
                               slots={"verified_order": order["order_number"], "pending_job": "status"})
    _, messages = await run(ActionContinueJob(), with_same_sender)
    assert [m.get("response") for m in messages] == ["utter_verification_needed"]


async def test_a_hand_off_attaches_only_an_order_the_store_says_was_proven(shop):
    """Agents see an order as verified only when it was: a forged slot gives a hand-off without one."""
    order = shop["orders"]["high_value_lost"]
    forged = tracker("person please", "human_handoff", slots={"verified_order": order["order_number"]},
                     proven=False)
    real = tracker("person please", "human_handoff", slots={"verified_order": order["order_number"]})
    for track in (forged, real):
        await run(ActionHandoff(), track)
    with db.session_factory(shop["engine"])() as session:
        by_sender = {h.conversation_id: h for h in session.scalars(select(Handoff).where(
            Handoff.conversation_id.in_([forged.sender_id, real.sender_id])))}
    assert by_sender[forged.sender_id].order_id is None and "No verified order" in by_sender[forged.sender_id].summary
    assert by_sender[real.sender_id].order_id is not None


async def test_an_order_number_typed_while_the_proof_is_asked_is_not_a_wrong_postcode(shop):
    """'where is WS-1004?' while asked for the proof is no failed check (its digits are no postcode)."""
    order = shop["orders"]["out_for_delivery"]
    sender = conversation()
    track = tracker(f"where is {order['order_number']}?", "order_status", sender=sender,
                    slots={"order_number": order["order_number"]}, requested_slot="identity_proof",
                    active_loop="verify_form")
    events, messages = await run(ValidateVerifyForm(), track)
    assert "utter_proof_mismatch" not in [m.get("response") for m in messages]
    with db.session_factory(shop["engine"])() as session:
        assert session.scalar(select(func.count()).select_from(VerificationAttempt)
                              .where(VerificationAttempt.conversation_id == sender)) == 0


# --- a way out of every question -----------------------------------------------------------


def rejected(events) -> bool:
    """Whether the form reads nothing from the message (Rasa then rejects the form and the rules decide)."""
    return set(slots_set(events)) <= {"requested_slot"}


def said(messages) -> List[Optional[str]]:
    return [m.get("response") for m in messages]


@pytest.mark.parametrize("text, intent", [
    ("talk to a human", "human_handoff"),   # a person: the hand-off rule
    ("stop", "stop"),                       # leave the check
    ("cancel", "stop"),
    ("help", "ask_help"),                   # help with the question
    ("I don't know", "dont_know"),          # the other ways to find the order
    ("I don't have it", "dont_know"),
    ("no", "deny"),
    ("you are a useless stupid bot", "insult"),  # a calm answer and a person
    ("are you a bot?", "bot_challenge"),
])
async def test_a_way_out_is_never_read_as_a_wrong_order_number(shop, text, intent):
    """The order-number question leaves every way out to the rules, and says nothing itself."""
    track = tracker(text, intent, requested_slot="order_number", active_loop="verify_form")
    events, messages = await run(ValidateVerifyForm(), track)
    assert rejected(events) and messages == []


@pytest.mark.parametrize("text, intent", [
    ("talk to a person", "human_handoff"), ("stop", "stop"), ("help", "ask_help"), ("I don't know", "dont_know")])
async def test_a_way_out_is_never_read_as_a_wrong_proof(shop, text, intent):
    """The proof question too: no "that doesn't look like an email address", no failed check."""
    order = shop["orders"]["in_transit_on_time"]
    track = tracker(text, intent, slots={"order_number": order["order_number"]}, requested_slot="identity_proof",
                    active_loop="verify_form")
    events, messages = await run(ValidateVerifyForm(), track)
    assert rejected(events) and messages == []
    with db.session_factory(shop["engine"])() as session:
        assert session.scalar(select(func.count()).select_from(VerificationAttempt)
                              .where(VerificationAttempt.conversation_id == track.sender_id)) == 0


async def test_i_dont_know_in_other_words_gets_help_not_a_complaint(shop):
    """'idk' that the model took for an answer: the ways to find the order, and the question is not repeated."""
    track = tracker("idk", "inform", requested_slot="order_number", active_loop="verify_form")
    events, messages = await run(ValidateVerifyForm(), track)
    assert said(messages) == ["utter_no_order_number"]
    assert "email address and delivery postcode" in texts(messages)
    assert slots_set(events)["failed_answers"] == 1 and slots_set(events)["requested_slot"] == "order_number"


async def test_the_second_failed_answer_offers_the_lookup_and_a_person(shop):
    """First miss: say so and ask again; second miss in a row: another way, with buttons."""
    first = tracker("blah", "inform", requested_slot="order_number", active_loop="verify_form")
    events, messages = await run(ValidateVerifyForm(), first)
    assert said(messages) == ["utter_invalid_order_number"] and slots_set(events)["failed_answers"] == 1
    second = tracker("blah blah", "inform", requested_slot="order_number", active_loop="verify_form",
                     slots={"failed_answers": 1})
    events, messages = await run(ValidateVerifyForm(), second)
    assert said(messages) == ["utter_invalid_order_number", "utter_offer_lookup"]
    payloads = [b["payload"] for b in DOMAIN["responses"]["utter_offer_lookup"][0]["buttons"]]
    assert payloads == ["/lookup_order", "/human_handoff"]


@pytest.mark.parametrize("slot, intent, response", [
    ("order_number", "ask_help", "utter_help_order_number"),
    ("order_number", "dont_know", "utter_no_order_number"),
    ("identity_proof", "dont_know", "utter_no_identity_proof"),  # offers a person
    ("lookup_email", "ask_help", "utter_help_lookup_email"),
    ("new_street", "ask_help", "utter_help_new_street"),
    ("new_city", "ask_help", "utter_help_new_city"),
    ("new_postcode", "dont_know", "utter_new_address_unknown"),
    ("resolution_choice", "ask_help", "utter_help_resolution_choice"),
])
async def test_help_and_i_dont_know_get_an_answer_for_that_question(shop, slot, intent, response):
    """Each question has its own help, which ends with what to do next; the question is then not asked again."""
    from actions.common import ANSWERED_FOR_THE_QUESTION
    from actions.handoff import ActionExplainQuestion

    events, messages = await run(ActionExplainQuestion(), tracker("?", intent, requested_slot=slot))
    assert said(messages) == [response] and slots_set(events)["failed_answers"] == 1
    assert response in ANSWERED_FOR_THE_QUESTION


async def test_after_help_the_form_does_not_ask_the_same_question_again(shop):
    """The ask action stays quiet when this turn already explained; otherwise it asks."""
    from actions.verification import ActionAskOrderNumber

    help_given = {"event": "bot", "text": "...", "metadata": {"utter_action": "utter_help_order_number"}}
    _, messages = await run(ActionAskOrderNumber(), tracker("help", "ask_help", after=[help_given]))
    assert messages == []
    _, messages = await run(ActionAskOrderNumber(), tracker("where is my order", "order_status"))
    assert said(messages) == ["utter_ask_order_number"]


async def test_no_to_the_lookup_offer_leaves_the_shopper_to_send_the_number(shop):
    """'No' after the offer: no repeat of the offer, just when to come back."""
    from actions.handoff import ActionExplainQuestion

    offer = {"event": "bot", "text": "...", "metadata": {"utter_action": "utter_offer_lookup"}}
    _, messages = await run(ActionExplainQuestion(), tracker("no", "deny", requested_slot="order_number",
                                                               history=[offer]))
    assert said(messages) == ["utter_no_lookup"]


# --- finding the order without its number ---------------------------------------------------


async def lookup(shop, email: str, postcode: str, sender: Optional[str] = None):
    track = tracker(f"{email} {postcode}", "inform", sender=sender, requested_slot="lookup_email",
                    active_loop="verify_form", slots={"order_lookup": True})
    return await run(ValidateVerifyForm(), track)


async def test_yes_to_the_offer_starts_the_lookup_with_what_the_shopper_gave(shop):
    """A 'yes' to the offer asks for the email, or straight for the postcode when the email came earlier."""
    offer = {"event": "bot", "text": "...", "metadata": {"utter_action": "utter_offer_lookup"}}
    track = tracker("yes", "affirm", requested_slot="order_number", active_loop="verify_form", history=[offer])
    events, _ = await run(ValidateVerifyForm(), track)
    assert slots_set(events)["order_lookup"] is True and slots_set(events)["requested_slot"] == "lookup_email"
    track = tracker("/lookup_order", "lookup_order", requested_slot="order_number", active_loop="verify_form",
                    slots={"identity_proof": "someone@example.com"})
    events, _ = await run(ValidateVerifyForm(), track)
    assert slots_set(events)["lookup_email"] == "someone@example.com"
    assert slots_set(events)["requested_slot"] == "lookup_postcode"


async def test_email_and_postcode_together_list_the_shoppers_orders_to_choose_from(shop):
    """Both match: the shopper's orders to that postcode (masked, no address), then the chosen one is checked."""
    order = shop["orders"]["in_transit_on_time"]
    neighbour = shop["orders"]["delivered"]  # same postcode, another customer
    assert neighbour["postcode"] == order["postcode"]
    sender = conversation()
    events, messages = await lookup(shop, order["email"], order["postcode"], sender)
    listed = texts(messages)
    assert said(messages) == ["utter_lookup_found"]
    assert order["order_number"] in listed and neighbour["order_number"] not in listed
    assert "ordered" in listed and order["postcode"] not in listed.split("postcode")[-1]
    assert [b["payload"] for b in messages[0]["buttons"]] == [order["order_number"]]
    assert slots_set(events)["identity_proof"] == order["email"] and "verified_order" not in slots_set(events)
    # choosing it from the list checks it with that email
    track = tracker(order["order_number"], "inform", sender=sender, requested_slot="order_number",
                    active_loop="verify_form", slots={"order_lookup": True, "identity_proof": order["email"],
                                                      "lookup_email": order["email"],
                                                      "lookup_postcode": order["postcode"]})
    events, messages = await run(ValidateVerifyForm(), track)
    assert slots_set(events)["verified_order"] == order["order_number"] and said(messages) == ["utter_verified"]


@pytest.mark.parametrize("which", ["email", "postcode"])
async def test_one_of_the_two_alone_finds_nothing_and_says_nothing(shop, which):
    """The right email with another postcode, or the right postcode with another email: the same neutral miss."""
    order = shop["orders"]["failed_attempt"]
    email = order["email"] if which == "email" else "someone.else@example.net"
    postcode = order["postcode"] if which == "postcode" else "9999 ZZ"
    events, messages = await lookup(shop, email, postcode)
    assert said(messages) == ["utter_lookup_mismatch"]
    assert order["order_number"] not in texts(messages)
    assert slots_set(events)["lookup_email"] is None and slots_set(events)["lookup_postcode"] is None


async def test_failed_lookups_count_towards_the_conversations_lock_out(shop):
    """A lookup is a proof attempt: the third miss locks the conversation, even for the right details."""
    order, sender = shop["orders"]["available_for_pickup"], conversation()
    for _ in range(2):
        _, messages = await lookup(shop, order["email"], "9999 ZZ", sender)
        assert said(messages) == ["utter_lookup_mismatch"]
    events, messages = await lookup(shop, order["email"], "9999 ZZ", sender)
    assert said(messages) == ["utter_locked_out"] and slots_set(events)["locked_out"] is True
    _, messages = await lookup(shop, order["email"], order["postcode"], sender)
    assert said(messages) == ["utter_locked_out"]


# --- greetings with details, and where it is going --------------------------------------------


@pytest.mark.parametrize("text", [
    "hi, where is my order WS-1003, postcode 3012 BP",
    "good morning, order 1003",
    "hi there, julia.bakker@example.com",
])
async def test_a_greeting_that_names_an_order_goes_straight_into_the_check(shop, text):
    """The details in a greeting are kept, and the verify form starts instead of the menu."""
    from actions.verification import ActionGreet

    events, messages = await run(ActionGreet(), tracker(text, "greet"))
    assert slots_set(events)["next_form"] == "verify_form" and messages == []
    assert slots_set(events)["pending_job"] == "status"
    assert "WS-1003" in (slots_set(events)["order_number"] or "") or slots_set(events)["identity_proof"]
    events, messages = await run(ActionGreet(), tracker("hi there", "greet"))
    assert slots_set(events)["next_form"] == "none" and said(messages) == ["utter_greet"]


async def test_what_address_is_it_going_to_shows_it_masked_and_starts_no_change(shop):
    """Asked as a change by the model or not, the question gets the masked address, not the address form."""
    from actions.address import ActionShowAddress

    order = shop["orders"]["not_shipped"]
    for intent in ("ask_delivery_address", "change_address"):
        events, _ = await run(ActionRouteJob(), tracker("what address is it going to?", intent))
        assert slots_set(events)["after_check"] == "show_address"
    track = tracker("what address is it going to?", "ask_delivery_address",
                    slots={"verified_order": order["order_number"]})
    events, messages = await run(ActionShowAddress(), track)
    said_text = texts(messages)
    assert said(messages) == ["utter_delivery_address", "utter_offer_address_change"]
    assert "**" in said_text and order["order_number"] in said_text
    assert not any(e.get("name") == "next_form" for e in events)


@pytest.mark.parametrize("intent", ["change_address", "inform"])  # whichever the model picks
async def test_an_address_change_request_with_the_new_address_keeps_it_and_its_postcode_is_no_proof(shop, intent):
    """'Change it to Kastanienallee 12, 10435 Berlin' with the order number: the address waits, no failed check."""
    events, _ = await run(ActionRouteJob(), tracker(
        "please change the address of WS-1001 to Kastanienallee 12, 10435 Berlin, Germany", intent))
    slots = slots_set(events)
    assert slots["pending_job"] == "address"
    assert slots["address_in_request"] == "Kastanienallee 12, 10435 Berlin, Germany"
    assert slots["order_number"] == "WS-1001" and slots["identity_proof"] is None
    # the address form starts with it, checked like an answer
    order = shop["orders"]["not_shipped"]
    given = {"verified_order": order["order_number"], "address_in_request": slots["address_in_request"]}
    started = tracker("1000", "inform", active_loop="address_form", slots=given,
                      after=[{"event": "action", "name": "action_continue_job"}])
    events, messages = await run(ValidateAddressForm(), started)
    filled = slots_set(events)
    assert (filled["new_street"], filled["new_postcode"], filled["new_city"], filled["new_country"]) == (
        "Kastanienallee 12", "10435", "Berlin", "Germany")
    assert filled["address_in_request"] is None and messages == []


async def test_while_verified_a_postcode_inside_an_address_is_no_proof(shop):
    """A verified shopper's message with an address and another order number starts no check with that postcode."""
    order = shop["orders"]["not_shipped"]
    track = tracker("and WS-1005 should go to Kastanienallee 12, 10435 Berlin", "order_status",
                    slots={"verified_order": order["order_number"]})
    events, _ = await run(ActionRouteJob(), track)
    assert slots_set(events)["order_number"] == "WS-1005" and slots_set(events)["identity_proof"] is None


# --- the address form: answers that are no address ----------------------------------------------


async def address_turn(shop, text: str, intent: str = "inform", asked: str = "new_street", **slots: Any):
    order = shop["orders"]["not_shipped"]
    track = tracker(text, intent, requested_slot=asked, active_loop="address_form",
                    slots={"verified_order": order["order_number"], **slots})
    return await run(ValidateAddressForm(), track)


async def test_a_whole_address_in_one_line_fills_every_part(shop):
    """'Kastanienallee 12, 10435 Berlin, Germany' at the street question: street, postcode, town and country."""
    events, messages = await address_turn(shop, "Kastanienallee 12, 10435 Berlin, Germany")
    slots = slots_set(events)
    assert (slots["new_street"], slots["new_postcode"], slots["new_city"], slots["new_country"]) == (
        "Kastanienallee 12", "10435", "Berlin", "Germany")
    assert messages == []  # the form goes on to the confirmation


@pytest.mark.parametrize("text, intent", [
    ("no I don't want to change it, I'm just asking", "inform"),
    ("no I don't want to change it, I'm just asking", "change_address"),
    ("I'm just asking", "inform"),
    ("keep the old address", "inform"),
])
async def test_a_refusal_leaves_the_address_form_with_nothing_stored(shop, text, intent):
    """Never saved as the street: the form ends, the address stays, and the shopper is told."""
    events, messages = await address_turn(shop, text, intent)
    assert said(messages) == ["utter_address_kept"] and "Nothing was changed" in texts(messages)
    assert slots_set(events)["requested_slot"] is None
    assert all(slots_set(events)[slot] is None for slot in ("new_street", "new_city"))


@pytest.mark.parametrize("text, asked", [("what?", "new_city"), ("why do you need that", "new_postcode")])
async def test_a_question_is_not_stored_as_a_part_of_the_address(shop, text, asked):
    """'what?' asked for the city is answered with what is needed, and the form goes on."""
    events, messages = await address_turn(shop, text, asked=asked, new_street="Kastanienallee 12")
    assert slots_set(events).get(asked) is None and slots_set(events)["requested_slot"] == asked
    assert said(messages) == [f"utter_help_{asked}"]


async def test_what_address_is_it_going_to_in_the_form_shows_it_and_goes_on(shop):
    """Asked in the middle of the form, the masked address is shown and nothing is stored."""
    events, messages = await address_turn(shop, "what address is it going to?", "change_address")
    assert said(messages) == ["utter_current_address"] and "**" in texts(messages)
    assert slots_set(events).get("new_street") is None and slots_set(events)["requested_slot"] == "new_street"


@pytest.mark.parametrize("text, intent", [("stop", "stop"), ("talk to a person", "human_handoff"),
                                          ("no", "deny"), ("help", "ask_help"), ("I don't know", "dont_know")])
async def test_the_address_form_leaves_ways_out_to_the_rules(shop, text, intent):
    """Recognised ways out are not stored as a street."""
    events, messages = await address_turn(shop, text, intent)
    assert rejected(events) and messages == []


@pytest.mark.parametrize("text, asked, expected", [
    ("Kastanienallee 12, 10435 Berlin, Germany", "street", ("Kastanienallee 12", "Berlin", "10435", "Germany")),
    ("Kastanienallee 12 10435 Berlin", "street", ("Kastanienallee 12", "Berlin", "10435", "")),
    ("change it to Prinsengracht 263, 1016 GV Amsterdam", "street", ("Prinsengracht 263", "Amsterdam", "1016 GV", "")),
    ("10 Downing Street, London SW1A 2AA, United Kingdom", "street",
     ("10 Downing Street", "London", "SW1A 2AA", "United Kingdom")),
    ("12 rue Oberkampf, 75011 Paris, France", "street", ("12 rue Oberkampf", "Paris", "75011", "France")),
    ("Torstraße 1", "street", ("Torstraße 1", "", "", "")),
    ("10435 Berlin", "city", ("", "Berlin", "10435", "")),  # the postcode with the town
    ("1015 CW", "postcode", ("", "", "1015 CW", "")),
    ("Germany", "country", ("", "", "", "Germany")),
    ("what?", "city", ("", "", "", "")),
    ("I'm just asking", "street", ("", "", "", "")),
    ("what address is it going to?", "street", ("", "", "", "")),
])
def test_reading_an_address_from_one_message(text, asked, expected):
    """Every part a message names, and nothing from a question or a refusal."""
    from bot.services.address import parse_address

    parts = parse_address(text, asked=asked)
    assert (parts.street, parts.city, parts.postcode, parts.country) == expected


@pytest.mark.parametrize("typed, code", [
    ("Germany", "DE"), ("germany obviously", "DE"), ("the Netherlands", "NL"), ("United Kingdom please", "GB"),
    ("de", "DE"), ("in germany or france", None), ("Atlantis", None),
])
def test_a_country_is_read_within_a_few_words(typed, code):
    """"germany obviously" was refused twice as an unknown country."""
    from bot.services.address import country_code
    assert country_code(typed) == code


async def test_forged_slots_cannot_switch_a_booked_replacement_or_hear_a_follow_up(shop):
    """A follow-up question (here: "a refund instead") answers only for an order this conversation proved."""
    from actions.jobs import ActionStatusDigression

    order = shop["orders"]["lost"]

    def resolutions() -> List[str]:
        with db.session_factory(shop["engine"])() as session:
            stored = get_order(session=session, number=order["order_number"])
            return list(session.scalars(select(Resolution.kind).where(Resolution.order_id == stored.id)))

    before = resolutions()
    question = "can I have a refund instead? and is it lost?"
    forged = {"verified_order": order["order_number"], "pending_job": "question", "order_question": question}
    _, messages = await run(ActionContinueJob(), tracker(question, "ask_about_order", slots=forged, proven=False))
    assert [m.get("response") for m in messages] == ["utter_verification_needed"]
    _, messages = await run(ActionStatusDigression(), tracker(question, "ask_about_order", slots=forged,
                                                              proven=False))
    assert messages == []
    assert resolutions() == before


@pytest.mark.parametrize("text, entity_value, reason", [
    ("it says delivered but i never got it!!! WS-1014", "delivered", "not_received"),
    ("tracking says damaged wtf, I want a replacement", None, "damaged"),
    ("I want a refund", None, None),
])
async def test_the_claim_reason_is_read_from_the_words_when_the_model_marks_none_or_a_wrong_one(
        shop, text, entity_value, reason):
    """"What happened to the parcel?" was asked after "I never got it"."""
    entities = [{"entity": "claim_reason", "value": entity_value}] if entity_value else []
    events, _ = await run(ActionRouteJob(), tracker(text, "refund_or_reship", entities=entities))
    assert slots_set(events).get("claim_reason") == reason


async def test_paused_lookups_for_an_email_lock_nothing_and_the_order_number_still_works(shop, settings):
    """Someone who knows only a shopper's email could pause its lookups, and that locked the owner's conversation."""
    owner = shop["orders"]["info_received"]

    async def look_up(postcode: str, sender: str):
        track = tracker(postcode, "inform", sender=sender,
                        slots={"order_lookup": True, "lookup_email": owner["email"]},
                        requested_slot="lookup_postcode", active_loop="verify_form")
        return await run(ValidateVerifyForm(), track)

    # Wrong postcodes until lookups with this email are paused (earlier tests may have paused them already).
    for n in range(settings.policy.verify_max_failures_per_email_hour + 1):
        _, messages = await look_up(f"{9001 + n} XY", conversation())
        if [m.get("response") for m in messages] == ["utter_lookup_unavailable"]:
            break
    sender = conversation()
    events, messages = await look_up(owner["postcode"], sender)
    assert [m.get("response") for m in messages] == ["utter_lookup_unavailable"]
    assert "locked_out" not in slots_set(events) and slots_set(events)["order_lookup"] is None
    events, messages = await verify(owner, owner["postcode"], sender)
    assert messages[0]["response"] == "utter_verified"


async def test_a_corrected_order_number_is_not_tried_as_a_postcode(shop):
    """"sorry wrong number, it's 1004" was checked as the postcode of the first order and counted as a failure."""
    first, meant = shop["orders"]["late_with_reason"], shop["orders"]["out_for_delivery"]
    digits = meant["order_number"].split("-")[1]
    events, messages = await verify(first, f"sorry wrong number, it's {digits}")
    assert "utter_proof_mismatch" not in [m.get("response") for m in messages]
    assert slots_set(events).get("order_number") == meant["order_number"]
    assert slots_set(events).get("identity_proof") in (None, "")


# --- proactive updates -------------------------------------------------------------------------


async def test_updates_are_given_only_for_a_proven_order_still_on_its_way(shop):
    """Consent needs a proven order; a delivered one has nothing left to tell; asking twice is said so."""
    from actions.updates import ActionSubscribeUpdates

    order = shop["orders"]["in_transit_on_time"]
    _, messages = await run(ActionSubscribeUpdates(), tracker("keep me posted", "subscribe_updates",
                                                              slots={"verified_order": order["order_number"]},
                                                              proven=False))
    assert [m["response"] for m in messages] == ["utter_updates_which_order"]
    sender = conversation()
    slots = {"verified_order": order["order_number"]}
    _, messages = await run(ActionSubscribeUpdates(), tracker("keep me posted", "subscribe_updates", sender=sender,
                                                              slots=slots))
    assert [(m["response"], m["number"]) for m in messages] == [("utter_updates_on", order["order_number"])]
    _, messages = await run(ActionSubscribeUpdates(), tracker("keep me posted", "subscribe_updates", sender=sender,
                                                              slots=slots))
    assert [m["response"] for m in messages] == ["utter_updates_already"]
    delivered = shop["orders"]["delivered"]
    _, messages = await run(ActionSubscribeUpdates(), tracker(
        "keep me posted", "subscribe_updates", slots={"verified_order": delivered["order_number"]}))
    assert [m["response"] for m in messages] == ["utter_updates_nothing_to_follow"]


async def test_yes_to_the_offer_of_updates_subscribes_and_no_other_yes_does(shop):
    order = shop["orders"]["shipped_redirect_possible"]
    offer = {"event": "bot", "text": "Shall I message you here?", "metadata": {"utter_action": "utter_offer_updates"}}
    _, messages = await run(ActionAffirm(), tracker("yes", "affirm", slots={"verified_order": order["order_number"]},
                                                    history=[offer]))
    assert [m["response"] for m in messages] == ["utter_updates_on"]
    other = {"event": "bot", "text": "Anything else?", "metadata": {"utter_action": "utter_anything_else"}}
    _, messages = await run(ActionAffirm(), tracker("yes", "affirm", slots={"verified_order": order["order_number"]},
                                                    history=[other]))
    assert [m["response"] for m in messages] == ["utter_menu"]


async def test_an_update_says_nothing_to_another_conversation_and_reopens_the_proof_for_its_own(shop):
    """The update's id is checked against the conversation: a forged trigger reveals nothing."""
    from actions.updates import ActionTrackingUpdate
    from bot.domain.enums import NoticeKind, NoticeState
    from bot.domain.updates import Notice
    from bot.services import updates as update_service
    from bot.store.models import Shipment

    order = shop["orders"]["out_for_delivery"]
    owner = conversation()
    ctx = context()

    def queue(session):
        update_service.subscribe(session=session, conversation_id=owner, channel="rest",
                                 order_number=order["order_number"], settings=ctx.settings, now=ctx.now())
        shipment = session.scalars(select(Shipment).where(
            Shipment.tracking_number == order["tracking_numbers"][0])).one()
        sub = session.scalars(select(UpdateSubscription).where(UpdateSubscription.conversation_id == owner)).one()
        row = update_service._insert(session, sub, shipment, Notice(NoticeKind.OUT_FOR_DELIVERY, "test:ofd", {}),
                                     due_at=ctx.now(), now=ctx.now())
        return row.id

    notification_id = ctx._transaction(queue)
    trigger = [{"entity": "notification_id", "value": str(notification_id)},
               {"entity": "update_key", "value": update_service.trigger_key(ctx.settings, notification_id)}]
    events, messages = await run(ActionTrackingUpdate(), tracker("", "EXTERNAL_tracking_update", entities=trigger))
    assert (events, messages) == ([], [])
    # The owner typing the trigger (as anyone can type an intent) proves nothing: no key, or a made-up one.
    for typed in ([trigger[0]], [trigger[0], {"entity": "update_key", "value": "0" * 32}]):
        events, messages = await run(ActionTrackingUpdate(), tracker("", "EXTERNAL_tracking_update", sender=owner,
                                                                     entities=typed))
        assert (events, messages) == ([], [])
    events, messages = await run(ActionTrackingUpdate(), tracker("", "EXTERNAL_tracking_update", sender=owner,
                                                                 entities=trigger))
    assert [m["response"] for m in messages] == ["utter_update_out_for_delivery"]
    assert slots_set(events)["verified_order"] == order["order_number"]
    assert ctx._transaction(lambda session: is_verified(session=session, conversation_id=owner,
                                                        order_number=order["order_number"], now=ctx.now(),
                                                        ttl_minutes=30))
    # Once sent, the same trigger says nothing again.
    ctx._transaction(lambda session: update_service.finish(session=session, notification_id=notification_id,
                                                           state=NoticeState.SENT, now=ctx.now()))
    assert await run(ActionTrackingUpdate(), tracker("", "EXTERNAL_tracking_update", sender=owner,
                                                     entities=trigger)) == ([], [])


async def test_a_refusal_is_never_consent_whatever_the_intent(shop):
    """'keine Updates mehr bitte' read as subscribe_updates stops the updates instead (blind-review finding)."""
    from actions.updates import ActionSubscribeUpdates

    order = shop["orders"]["late_no_reason"]
    sender = conversation()
    slots = {"verified_order": order["order_number"]}
    await run(ActionSubscribeUpdates(), tracker("keep me posted", "subscribe_updates", sender=sender, slots=slots))
    _, messages = await run(ActionSubscribeUpdates(), tracker("keine Updates mehr bitte", "subscribe_updates",
                                                              sender=sender, slots=slots))
    assert [m["response"] for m in messages] == ["utter_updates_off"]
    _, messages = await run(ActionSubscribeUpdates(), tracker("no updates please", "subscribe_updates",
                                                              sender=sender, slots=slots))
    assert [m["response"] for m in messages] == ["utter_updates_none"]


async def test_asking_to_be_kept_posted_before_verification_is_consent_once_verified(shop):
    """'can you keep me posted about WS-1008? <email>': the status, then consent, without asking again."""
    order = shop["orders"]["late_with_reason"]
    events, messages = await answer(order, "status", updates_wanted=True)
    assert messages[-1]["response"] == "utter_updates_on"
    assert slots_set(events)["updates_wanted"] is None


async def test_updates_are_offered_once_per_order_and_a_no_stands(shop):
    order = shop["orders"]["in_transit_on_time"]
    offered = {"event": "bot", "text": f"Shall I message you here if anything changes with order "
                                       f"{order['order_number']}?", "metadata": {"utter_action": "utter_offer_updates"}}
    track = tracker("why is it taking so long", "delivery_delay", history=[offered],
                    slots={"verified_order": order["order_number"], "pending_job": "delay"})
    _, messages = await run(ActionContinueJob(), track)
    assert messages[-1]["response"] == "utter_anything_else"


async def test_the_refund_or_replacement_button_asks_which_rather_than_booking_a_refund(shop):
    """The button's payload '/refund_or_reship' contains the word refund; it chooses nothing (blind-review finding)."""
    from bot.store.models import Order as OrderRow
    from bot.store.models import Shipment

    def unclaimed_lost(session) -> List[str]:
        claimed = select(Resolution.order_id)
        return list(session.scalars(select(OrderRow.number).join(Shipment).where(
            Shipment.status == "lost", OrderRow.value < 200, OrderRow.id.not_in(claimed)).order_by(OrderRow.number)))

    first, second = context()._transaction(unclaimed_lost)[:2]
    for number, said, choice in ((first, "/refund_or_reship", None), (second, "it's lost, I want a refund", "refund")):
        track = tracker(said, "refund_or_reship",
                        slots={"verified_order": number, "pending_job": "claim", "claim_reason": "lost"})
        events, _ = await run(ActionContinueJob(), track)
        assert slots_set(events).get("next_form") == "claim_form"
        assert slots_set(events).get("resolution_choice") == choice


async def test_updates_stopped_in_a_conversation_are_not_offered_again_there(shop):
    from actions.updates import ActionSubscribeUpdates, ActionUnsubscribeUpdates

    order = shop["orders"]["split_shipment"]
    sender = conversation()
    slots = {"verified_order": order["order_number"]}
    await run(ActionSubscribeUpdates(), tracker("keep me posted", "subscribe_updates", sender=sender, slots=slots))
    await run(ActionUnsubscribeUpdates(), tracker("no more messages pls", "unsubscribe_updates", sender=sender,
                                                  slots=slots))
    _, messages = await run(ActionContinueJob(), tracker("where is it", "order_status", sender=sender,
                                                         slots={**slots, "pending_job": "status"}))
    assert messages[-1]["response"] == "utter_anything_else"


@pytest.mark.parametrize("scenario, said, last", [
    ("failed_attempt", "notify me when it gets redelivered pls", "utter_updates_on"),  # a question answered first
    ("stalled", "any update? please let me know when it moves", "utter_offer_human"),  # the colleague stays last
])
async def test_asking_for_updates_is_consent_whatever_the_answer_ends_with(shop, scenario, said, last):
    order = shop["orders"][scenario]
    events, messages = await answer(order, "status", updates_wanted=True, order_question=said)
    responses = [m.get("response") for m in messages]
    assert "utter_updates_on" in responses and responses[-1] == last
    assert slots_set(events)["updates_wanted"] is None


@pytest.mark.parametrize("said, reread", [("why?", True), ("but why", True), ("how come??", True),
                                          ("why is the sky blue and what is love", False)])
async def test_a_bare_why_after_an_update_is_a_delay_question_about_that_order(shop, said, reread):
    update = {"event": "bot", "text": "Update on order WS-1009: UPS now expects ...",
              "metadata": {"utter_action": "utter_update_late_estimate"}}
    events, messages = await run(ActionFallback(), tracker(said, "nlu_fallback", history=[update]))
    users = [e for e in events if e.get("event") == "user"]
    if reread:
        assert messages == [] and users[0]["parse_data"]["intent"]["name"] == "delivery_delay"
    else:
        assert users == [] and messages
    # Without an update before it, "why?" is not understood as before.
    events, messages = await run(ActionFallback(), tracker(said, "nlu_fallback"))
    assert [e for e in events if e.get("event") == "user"] == []
