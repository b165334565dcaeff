"""Proof of identity in the store: guessing is slowed, the owner keeps the strong proof, a proof ends.

Run against the seeded demo store on SQLite and PostgreSQL; every test rolls
back what it wrote.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from sqlalchemy import select

from bot.domain.enums import VerifyResult
from bot.services.verification import email_key, forget, is_verified, look_up, verify
from bot.store.demo import showcase
from bot.store.models import Verification, VerificationAttempt

from .conftest import NOW


@pytest.fixture
def orders(demo_session, settings):
    return {row["scenario"]: row for row in showcase(session=demo_session, settings=settings, now=NOW)}


def check(session, settings, conversation, order, *, email=None, postcode=None, now=NOW):
    return verify(session=session, conversation_id=conversation, order_number=order["order_number"], email=email,
                  postcode=postcode, policy=settings.policy, now=now)


def test_strangers_cannot_lock_the_owner_out_of_the_email_proof(demo_session, settings, orders):
    """Five wrong proofs from five conversations pause the postcode, never the email on the order."""
    order = orders["in_transit_on_time"]
    for n in range(settings.policy.verify_max_failures_per_order_hour):
        assert check(demo_session, settings, f"rest:stranger-{n}", order, postcode="9999 ZZ").result \
            == VerifyResult.MISMATCH
    owner = check(demo_session, settings, "whatsapp:31600000001", order, email=order["email"])
    assert (owner.result, owner.order_number) == (VerifyResult.VERIFIED, order["order_number"])
    # the postcode, guessable, counts for nothing for the hour, even when right
    by_postcode = check(demo_session, settings, "rest:someone", order, postcode=order["postcode"])
    assert by_postcode.result == VerifyResult.POSTCODE_PAUSED
    # an hour later it counts again
    later = check(demo_session, settings, "rest:someone-else", order, postcode=order["postcode"],
                  now=NOW + dt.timedelta(minutes=61))
    assert later.result == VerifyResult.VERIFIED


def test_a_paused_postcode_says_the_same_for_an_order_that_does_not_exist(demo_session, settings):
    """The pause is decided by the typed number, so it tells a guesser nothing about existence."""
    ghost = {"order_number": "WS-999999"}
    for n in range(settings.policy.verify_max_failures_per_order_hour):
        check(demo_session, settings, f"rest:g{n}", ghost, postcode="1234 AB")
    assert check(demo_session, settings, "rest:g-last", ghost, postcode="1234 AB").result \
        == VerifyResult.POSTCODE_PAUSED


def test_one_email_cannot_be_tried_against_every_order(demo_session, settings, orders, caplog):
    """Past the shop-wide limit an email proves nothing for an hour, not even for its own orders."""
    victim = orders["late_with_reason"]
    others = [row for name, row in orders.items() if row["email"] != victim["email"]]
    limit = settings.policy.verify_max_failures_per_email_hour
    assert len(others) >= limit
    with caplog.at_level(logging.WARNING, logger="bot.services.verification"):
        for n, other in enumerate(others[:limit]):
            assert check(demo_session, settings, f"rest:probe-{n}", other, email=victim["email"]).result \
                == VerifyResult.MISMATCH
    assert any("one email address" in r.getMessage() for r in caplog.records), "no warning a shop can alert on"
    assert victim["email"] not in caplog.text  # the warning names a hash prefix, never the address
    own = check(demo_session, settings, "rest:probe-own", victim, email=victim["email"])
    assert own.result == VerifyResult.EMAIL_PAUSED
    assert check(demo_session, settings, "rest:probe-later", victim, email=victim["email"],
                 now=NOW + dt.timedelta(minutes=61)).result == VerifyResult.VERIFIED


def test_the_attempts_table_keeps_no_email_address(demo_session, settings, orders):
    """What is counted per email is its hash."""
    order = orders["delivered"]
    check(demo_session, settings, "rest:h", order, email="Someone.Else@Example.net")
    row = demo_session.scalars(select(VerificationAttempt).where(VerificationAttempt.conversation_id == "rest:h")).one()
    assert row.proof_key == email_key("someone.else@example.net") and "@" not in row.proof_key
    assert row.proof_kind == "email"


def test_three_failures_lock_a_conversation_for_a_day(demo_session, settings, orders):
    """The conversation stops trying, even with the right proof; the next day it may try again."""
    order = orders["out_for_delivery"]
    results = [check(demo_session, settings, "rest:c", order, email="x@example.net").result for _ in range(3)]
    assert results == [VerifyResult.MISMATCH, VerifyResult.MISMATCH, VerifyResult.LOCKED]
    assert check(demo_session, settings, "rest:c", order, email=order["email"]).result == VerifyResult.LOCKED
    assert check(demo_session, settings, "rest:c", order, email=order["email"],
                 now=NOW + dt.timedelta(days=1, minutes=1)).result == VerifyResult.VERIFIED


def test_a_verification_lapses_without_use_and_ends_with_the_session(demo_session, settings, orders):
    """Live while used; gone after the TTL without use, and when the conversation starts a new session."""
    order, ttl = orders["delivered"], settings.verification_ttl_minutes
    assert check(demo_session, settings, "rest:v", order, email=order["email"]).verified

    def alive(at: dt.datetime, conversation: str = "rest:v") -> bool:
        return is_verified(session=demo_session, conversation_id=conversation, order_number=order["order_number"],
                           now=at, ttl_minutes=ttl)

    assert alive(NOW + dt.timedelta(minutes=ttl - 1))  # used: the clock restarts from here
    assert alive(NOW + dt.timedelta(minutes=2 * ttl - 2))
    assert not alive(NOW + dt.timedelta(minutes=3 * ttl))  # idle for longer than the TTL
    assert not alive(NOW + dt.timedelta(minutes=3 * ttl + 1))  # and it does not come back
    assert not alive(NOW, conversation="rest:someone-else")  # it belongs to one conversation

    assert check(demo_session, settings, "rest:v", order, email=order["email"]).verified
    assert forget(session=demo_session, conversation_id="rest:v") == 1
    assert not alive(NOW)
    assert demo_session.scalars(select(Verification).where(Verification.conversation_id == "rest:v")).first() is None


def test_one_postcode_cannot_be_sprayed_across_order_numbers(demo_session, settings, orders, caplog):
    """Postcodes are shared: after the limit with one postcode, it proves nothing for any order for an hour."""
    target = orders["in_transit_on_time"]
    others = [row for row in orders.values() if row["postcode"] != target["postcode"]]
    limit = settings.policy.verify_max_failures_per_postcode_hour
    with caplog.at_level(logging.WARNING, logger="bot.services.verification"):
        for n, other in enumerate((others * 2)[:limit]):
            assert check(demo_session, settings, f"rest:spray-{n}", other, postcode=target["postcode"]).result \
                == VerifyResult.MISMATCH
    assert any("one postcode" in r.getMessage() for r in caplog.records)
    sprayed = check(demo_session, settings, "rest:spray-hit", target, postcode=target["postcode"])
    assert sprayed.result == VerifyResult.POSTCODE_PAUSED  # even on an order it belongs to
    assert check(demo_session, settings, "rest:owner", target, email=target["email"]).verified  # the email still works


def test_a_postcode_spray_shop_wide_pauses_every_postcode(demo_session, settings, orders):
    """Many postcode failures across the shop in an hour: postcodes stop counting; emails still work."""
    from bot.domain.policy import Policy

    policy = Policy(verify_max_postcode_failures_shop_hour=4)
    target = orders["delivered"]
    for n in range(4):
        verify(session=demo_session, conversation_id=f"rest:w{n}", order_number="WS-99999", postcode=f"{1000 + n} AA",
               policy=policy, now=NOW)
    paused = verify(session=demo_session, conversation_id="rest:w-hit", order_number=target["order_number"],
                    postcode=target["postcode"], policy=policy, now=NOW)
    assert paused.result == VerifyResult.POSTCODE_PAUSED
    assert verify(session=demo_session, conversation_id="rest:w-owner", order_number=target["order_number"],
                  email=target["email"], policy=policy, now=NOW).verified


# --- finding the order by email and postcode, without its number -------------------------------


def find(session, settings, conversation, *, email, postcode, now=NOW, policy=None):
    return look_up(session=session, conversation_id=conversation, email=email, postcode=postcode,
                   policy=policy or settings.policy, now=now)


def test_a_lookup_needs_the_email_and_the_postcode_of_the_same_order(demo_session, settings, orders):
    """Both together list the shopper's orders; either one alone, or one of each from two shoppers, finds nothing."""
    julia, mila = orders["in_transit_on_time"], orders["delivered"]  # two customers, one postcode
    assert julia["postcode"] == mila["postcode"]
    found = find(demo_session, settings, "rest:l1", email=julia["email"].upper(), postcode=julia["postcode"].lower())
    assert found.result == VerifyResult.VERIFIED
    assert [c.number for c in found.orders] == [julia["order_number"]]
    assert found.orders[0].items and "@" not in found.orders[0].items
    for email, postcode in ((julia["email"], "9999 ZZ"), ("nobody@example.net", julia["postcode"]),
                            (julia["email"], orders["not_shipped"]["postcode"])):
        missed = find(demo_session, settings, f"rest:l-{postcode}", email=email, postcode=postcode)
        assert (missed.result, missed.orders) == (VerifyResult.MISMATCH, ())
    # a lookup proves no order by itself: the order chosen from the list is checked as usual
    assert demo_session.scalars(select(Verification).where(Verification.conversation_id == "rest:l1")).first() is None


def test_a_lookup_is_a_proof_attempt_and_locks_the_conversation_like_one(demo_session, settings, orders):
    """Lookups and wrong proofs count together: the third failure locks, even for the right details."""
    order = orders["damaged"]
    assert find(demo_session, settings, "rest:lk", email=order["email"], postcode="9999 ZZ").result \
        == VerifyResult.MISMATCH
    assert check(demo_session, settings, "rest:lk", order, email="x@example.net").result == VerifyResult.MISMATCH
    assert find(demo_session, settings, "rest:lk", email=order["email"], postcode="9999 ZZ").result \
        == VerifyResult.LOCKED
    assert find(demo_session, settings, "rest:lk", email=order["email"], postcode=order["postcode"]).result \
        == VerifyResult.LOCKED
    rows = demo_session.scalars(select(VerificationAttempt).where(VerificationAttempt.conversation_id == "rest:lk"))
    for row in rows:
        assert "@" not in (row.proof_key or "") and order["postcode"] not in row.order_number


def test_failed_lookups_pause_lookups_with_the_email_never_its_proofs(demo_session, settings, orders):
    """Trying one email with many postcodes pauses lookups with it; whoever knows only the email cannot lock the
    owner out: the order number with that email still proves the order."""
    victim = orders["lost"]
    for n in range(settings.policy.verify_max_failures_per_email_hour):
        find(demo_session, settings, f"rest:le-{n}", email=victim["email"], postcode=f"{2000 + n} AA")
    assert find(demo_session, settings, "rest:le-own", email=victim["email"], postcode=victim["postcode"]).result \
        == VerifyResult.EMAIL_PAUSED
    assert check(demo_session, settings, "rest:le-check", victim, email=victim["email"]).verified


def test_failed_lookups_pause_lookups_with_the_postcode_never_its_proofs(demo_session, settings, orders):
    """Trying one shared postcode with many emails pauses lookups with it; the postcode still proves an order."""
    target = orders["exception"]
    for n in range(settings.policy.verify_max_failures_per_postcode_hour):
        find(demo_session, settings, f"rest:lp-{n}", email=f"guess{n}@example.net", postcode=target["postcode"])
    assert find(demo_session, settings, "rest:lp-own", email=target["email"], postcode=target["postcode"]).result \
        == VerifyResult.POSTCODE_PAUSED
    assert check(demo_session, settings, "rest:lp-proof", target, postcode=target["postcode"]).verified
    assert check(demo_session, settings, "rest:lp-owner", target, email=target["email"]).verified


def test_a_lookup_spray_shop_wide_pauses_lookups_not_postcode_proofs(demo_session, settings, orders):
    policy = settings.policy.copy(update={"verify_max_postcode_failures_shop_hour": 6})
    for n in range(6):
        find(demo_session, settings, f"rest:ls-{n}", email=f"x{n}@example.net", postcode=f"{3000 + n} BB",
             policy=policy)
    target = orders["delivered"]
    assert find(demo_session, settings, "rest:ls-own", email=target["email"], postcode=target["postcode"],
                policy=policy).result == VerifyResult.POSTCODE_PAUSED
    proof = verify(session=demo_session, conversation_id="rest:ls-proof", order_number=target["order_number"],
                   postcode=target["postcode"], policy=policy, now=NOW)
    assert proof.verified


def test_refused_attempts_neither_extend_a_pause_nor_lock_the_owner(demo_session, settings, orders):
    """While a stranger's failures keep an email paused, the owner's own tries are refused but not counted:
    their conversation is not locked, and the email works again an hour after the stranger's last failure."""
    victim, others = orders["in_transit_on_time"], [o for k, o in orders.items() if k != "in_transit_on_time"]
    for n in range(settings.policy.verify_max_failures_per_email_hour):
        check(demo_session, settings, f"rest:st-{n}", others[n % len(others)], email=victim["email"])
    later = NOW + dt.timedelta(minutes=30)
    for _ in range(settings.policy.verify_max_failures_per_conversation + 2):
        assert check(demo_session, settings, "rest:owner-tries", victim, email=victim["email"], now=later).result \
            == VerifyResult.EMAIL_PAUSED
    after_hour = NOW + dt.timedelta(minutes=61)
    owner = check(demo_session, settings, "rest:owner-tries", victim, email=victim["email"], now=after_hour)
    assert owner.verified
    refused_rows = demo_session.scalars(select(VerificationAttempt).where(
        VerificationAttempt.conversation_id == "rest:owner-tries", VerificationAttempt.succeeded.is_(False))).all()
    assert refused_rows == []
