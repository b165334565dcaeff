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
from bot.services.verification import remember
from bot.store import db
from bot.store.models import AddressChangeRequest, AuditLog, Handoff, Resolution, VerificationAttempt
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
        assert slots_set(events)["order_number"] is None  # ask again from the start


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
    assert slots_set(events)["locked_out"] is True
    assert "try again later" in texts(messages)
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
STATUS_WORDS = {
    "not_shipped": ("hasn't shipped yet", "utter_anything_else"),
    "info_received": ("label is ready", "utter_anything_else"),
    "in_transit_on_time": ("on its way", "utter_anything_else"),
    "out_for_delivery": ("out for delivery", "utter_anything_else"),
    "delivered": ("delivered it", "utter_anything_else"),
    "failed_attempt": ("tried to deliver it", "utter_anything_else"),
    "available_for_pickup": ("pickup point", "utter_anything_else"),
    "late_with_reason": ("on its way", "utter_anything_else"),
    "late_no_reason": ("on its way", "utter_anything_else"),
    "stalled": ("no scan from", "utter_offer_human"),  # a colleague asks the carrier to trace it
    "exception": ("a customs check", "utter_anything_else"),
    "lost": ("lost track of it", "utter_offer_claim"),
    "damaged": ("reported it damaged", "utter_offer_claim"),
    "delivered_disputed": ("delivered it", "utter_anything_else"),
    "returned_to_sender": ("sent it back to us", "utter_offer_returned"),
    "split_shipment": ("ships in 2 parcels", "utter_anything_else"),
    "shipped_redirect_possible": ("on its way", "utter_anything_else"),
    "shipped_no_redirect": ("on its way", "utter_anything_else"),
    "high_value_lost": ("we treat it as lost", "utter_offer_claim"),
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
    assert intents <= set(DOMAIN["intents"])
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
    assert "now expects it" in said
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
    events, messages = await answer(shop["orders"]["high_value_lost"], "delay")
    offer = messages[-1]
    assert offer["response"] == "utter_offer_claim" and DOMAIN["responses"]["utter_offer_claim"][0]["buttons"]
    assert "refund or a replacement" in texts([offer])
    assert slots_set(events)["claim_reason"] == "lost"


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
    slots = {"verified_order": order["order_number"], "claim_reason": "lost", "resolution_choice": "refund"}
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
    slots = {"verified_order": first["order_number"], "claim_reason": "damaged", "resolution_choice": "reship"}
    _, messages = await run(ActionSubmitClaim(), tracker("new one please", "inform", slots=slots))
    assert "replacement is booked" in texts(messages)
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
    claim = {"verified_order": damaged["order_number"], "claim_reason": "damaged", "resolution_choice": "refund"}
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
