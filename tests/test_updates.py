"""Proactive updates in the store, on SQLite and PostgreSQL: the feeds, consent, each trigger, the limits.

The webhooks and the channels over HTTP are in test_updates_live.py; here the
services are driven directly with a fixed clock, so each rule is checked with
the numbers worked out in the test.
"""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot.config import load_settings
from bot.domain import aftership
from bot.domain.enums import NoticeKind, NoticeState
from bot.domain.updates import parse_quiet_hours, release_time
from bot.services import updates
from bot.store.models import FeedReceipt, Notification, TrackingEvent
from tests.test_store import make_order, make_shipment

AMS = ZoneInfo("Europe/Amsterdam")
#: Tuesday 17 November 2026, 10:00 in Amsterdam (09:00 UTC): inside the day, outside quiet hours.
NOW = dt.datetime(2026, 11, 17, 9, 0, tzinfo=dt.timezone.utc)
CONVERSATION = "widget:" + "a" * 32


def settings_with(**values):
    env = {"DATABASE_URL": "sqlite:///unused.db", "SHOP_TIMEZONE": "Europe/Amsterdam",
           "NOTIFY_QUIET_HOURS": "21:00-08:00", "NOTIFY_MAX_PER_ORDER_PER_DAY": "3"}
    env.update({key.upper(): str(value) for key, value in values.items()})
    return load_settings(environ=env, env_file=None)


@pytest.fixture
def parcel(session):
    """Order WS-5001 (promised Thu 19 Nov) with one DHL parcel in transit since Monday."""
    order = make_order(session)
    shipment = make_shipment(session, order)
    feed(session, "InTransit", "InTransit_002", dt.datetime(2026, 11, 16, 8, 0, tzinfo=dt.timezone.utc))
    session.flush()
    return shipment


def feed(session, tag, subtag, when, *, settings=None, event_id=None, estimate=None, now=NOW, location="Utrecht"):
    body = aftership.sample_webhook(tracking_number="JVGL0001", slug="dhl", tag=tag, subtag=subtag,
                                    message=f"{tag} scan", checkpoint_time=when, location=location,
                                    event_id=event_id, estimate=estimate)
    update = aftership.parse_webhook(json.dumps(body).encode())
    return updates.ingest_aftership(session=session, update=update, settings=settings or settings_with(), now=now)


def queued(session):
    return list(session.scalars(select(Notification).where(Notification.state == NoticeState.QUEUED.value)
                                .order_by(Notification.id)))


def subscribe(session, settings=None, conversation=CONVERSATION, now=NOW):
    return updates.subscribe(session=session, conversation_id=conversation, channel=conversation.split(":")[0],
                             order_number="WS-5001", settings=settings or settings_with(), now=now)


# --- the feed -----------------------------------------------------------------------------------


def test_a_webhook_stores_its_checkpoint_once_and_a_replay_changes_nothing(session, parcel):
    when = dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc)
    first = feed(session, "OutForDelivery", "OutForDelivery_001", when, event_id="evt-1")
    assert (first.duplicate, first.events_stored) == (False, 1)
    again = feed(session, "OutForDelivery", "OutForDelivery_001", when, event_id="evt-1")
    assert again.duplicate and again.events_stored == 0
    # The same checkpoint in a new event (AfterShip re-sends the whole history) is stored once too.
    third = feed(session, "OutForDelivery", "OutForDelivery_001", when, event_id="evt-2")
    assert (third.duplicate, third.events_stored) == (False, 0)
    assert session.scalar(select(func.count()).select_from(TrackingEvent)
                          .where(TrackingEvent.shipment_id == parcel.id)) == 2
    session.refresh(parcel)
    assert parcel.status == "out_for_delivery"


def test_an_unknown_tracking_number_is_recorded_and_nothing_else(session, parcel):
    body = aftership.sample_webhook(tracking_number="NOSUCH123", slug="dhl", tag="InTransit",
                                    subtag="InTransit_001", message="moving", checkpoint_time=NOW)
    result = updates.ingest_aftership(session=session, update=aftership.parse_webhook(json.dumps(body).encode()),
                                      settings=settings_with(), now=NOW)
    assert result.unknown == ["NOSUCH123"] and result.events_stored == 0
    receipt = session.scalars(select(FeedReceipt).where(FeedReceipt.tracking_number == "NOSUCH123")).one()
    assert receipt.known is False


def test_the_feeds_estimate_window_is_kept_on_the_shipment(session, parcel):
    feed(session, "InTransit", "InTransit_007", dt.datetime(2026, 11, 17, 7, 0, tzinfo=dt.timezone.utc),
         estimate=(dt.date(2026, 11, 20), dt.date(2026, 11, 19), dt.date(2026, 11, 21)))
    session.refresh(parcel)
    assert (parcel.eta_earliest, parcel.eta_latest) == (dt.date(2026, 11, 19), dt.date(2026, 11, 21))


def test_own_format_batches_are_all_or_nothing_and_idempotent(session, parcel):
    good = {"carrier": "dhl", "tracking_number": "JVGL0001", "occurred_at": "2026-11-17T08:30:00+01:00",
            "code": "out-for-delivery", "location": "Amsterdam"}
    bad = {"carrier": "dhl", "tracking_number": "JVGL0001", "code": "transit"}  # no occurred_at
    with pytest.raises(updates.FeedRejected) as refused:
        updates.ingest_own_events(session=session, body=json.dumps({"events": [good, bad]}).encode(),
                                  settings=settings_with(), now=NOW)
    assert any("occurred_at" in problem for problem in refused.value.problems)
    assert session.scalar(select(func.count()).select_from(TrackingEvent)) == 1  # only the fixture's scan
    body = json.dumps({"events": [good, {**good, "tracking_number": "UNKNOWN99"}]}).encode()
    result = updates.ingest_own_events(session=session, body=body, settings=settings_with(), now=NOW)
    assert (result.events_stored, result.unknown) == (1, ["UNKNOWN99"])
    assert updates.ingest_own_events(session=session, body=body, settings=settings_with(), now=NOW).duplicate


# --- consent and the triggers -------------------------------------------------------------------


def test_nobody_is_queued_a_message_without_consent(session, parcel):
    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc))
    assert queued(session) == []


@pytest.mark.parametrize("tag, subtag, kind", [
    ("Exception", "Exception_004", NoticeKind.EXCEPTION),
    ("AttemptFail", "AttemptFail_002", NoticeKind.FAILED_ATTEMPT),
    ("AvailableForPickup", "AvailableForPickup_001", NoticeKind.PICKUP),
    ("OutForDelivery", "OutForDelivery_001", NoticeKind.OUT_FOR_DELIVERY),
    ("Exception", "Exception_013", NoticeKind.LOST),
])
def test_each_status_worth_a_message_queues_one_for_the_subscriber(session, parcel, tag, subtag, kind):
    assert subscribe(session) is True
    feed(session, tag, subtag, dt.datetime(2026, 11, 17, 7, 0, tzinfo=dt.timezone.utc))
    rows = queued(session)
    assert [(r.kind, r.conversation_id, r.order_number) for r in rows] == [(kind.value, CONVERSATION, "WS-5001")]


def test_delivered_is_told_only_when_the_setting_asks_for_it(session, parcel):
    subscribe(session)
    feed(session, "Delivered", "Delivered_001", dt.datetime(2026, 11, 17, 7, 0, tzinfo=dt.timezone.utc))
    assert queued(session) == []
    parcel2 = make_shipment(session, parcel.order, tracking="JVGL0002")
    on = settings_with(notify_delivered="true")
    body = aftership.sample_webhook(tracking_number="JVGL0002", slug="dhl", tag="Delivered", subtag="Delivered_001",
                                    message="delivered", checkpoint_time=dt.datetime(2026, 11, 17, 8, 0,
                                                                                      tzinfo=dt.timezone.utc))
    updates.ingest_aftership(session=session, update=aftership.parse_webhook(json.dumps(body).encode()),
                             settings=on, now=NOW)
    assert [(r.kind, r.shipment_id) for r in queued(session)] == [("delivered", parcel2.id)]


def test_a_later_estimate_past_the_promise_is_told_and_each_further_slip_again(session, parcel):
    subscribe(session)
    when = dt.datetime(2026, 11, 17, 7, 0, tzinfo=dt.timezone.utc)
    # Promised Thu 19 Nov; the feed now says 23-24 Nov: late.
    feed(session, "InTransit", "InTransit_003", when, estimate=(dt.date(2026, 11, 24), dt.date(2026, 11, 23),
                                                                dt.date(2026, 11, 24)))
    assert [(r.kind, r.change_key) for r in queued(session)] == [("late_estimate", "eta:2026-11-24")]
    # The same estimate again: nothing new.  A further slip: a second message.
    feed(session, "InTransit", "InTransit_003", when, event_id="again",
         estimate=(dt.date(2026, 11, 24), dt.date(2026, 11, 23), dt.date(2026, 11, 24)))
    assert len(queued(session)) == 1
    feed(session, "InTransit", "InTransit_004", when + dt.timedelta(hours=2),
         estimate=(dt.date(2026, 11, 26), dt.date(2026, 11, 25), dt.date(2026, 11, 26)))
    assert [r.change_key for r in queued(session)] == ["eta:2026-11-24", "eta:2026-11-26"]


def test_what_the_shopper_was_just_told_is_not_sent_again_when_they_subscribe(session, parcel):
    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc))
    subscribe(session)
    assert queued(session) == []
    # A repeat of the same status from the carrier (a second scan) is not news either.
    feed(session, "OutForDelivery", "OutForDelivery_003", dt.datetime(2026, 11, 17, 7, 0, tzinfo=dt.timezone.utc))
    assert queued(session) == []


def test_a_stalled_parcel_is_found_by_the_sweep_once_per_silence(session, parcel):
    subscribe(session)
    # Last scan Monday 16 Nov; POLICY_STALLED_BUSINESS_DAYS is 3: stalled from Thursday 19 Nov.
    assert updates.sweep(session=session, settings=settings_with(), now=NOW + dt.timedelta(days=1)) == 0
    thursday = dt.datetime(2026, 11, 19, 9, 0, tzinfo=dt.timezone.utc)
    assert updates.sweep(session=session, settings=settings_with(), now=thursday) == 1
    assert updates.sweep(session=session, settings=settings_with(), now=thursday + dt.timedelta(hours=5)) == 0
    assert [r.kind for r in queued(session)] == ["stalled"]


def test_stopping_updates_skips_what_is_queued_and_ends_consent(session, parcel):
    subscribe(session)
    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc))
    assert len(queued(session)) == 1
    assert updates.unsubscribe(session=session, conversation_id=CONVERSATION, order_number=None, now=NOW) == ["WS-5001"]
    assert queued(session) == []
    feed(session, "AttemptFail", "AttemptFail_001", dt.datetime(2026, 11, 17, 8, 0, tzinfo=dt.timezone.utc))
    assert queued(session) == []
    assert updates.subscriptions(session=session, conversation_id=CONVERSATION) == []


# --- quiet hours, the cap, the outbox ------------------------------------------------------------


def test_quiet_hours_hold_a_message_until_the_morning(session, parcel):
    subscribe(session)
    late = dt.datetime(2026, 11, 17, 21, 30, tzinfo=dt.timezone.utc)  # 22:30 in Amsterdam
    feed(session, "AttemptFail", "AttemptFail_001", late - dt.timedelta(minutes=20), now=late)
    row = queued(session)[0]
    assert row.due_at == dt.datetime(2026, 11, 18, 7, 0, tzinfo=dt.timezone.utc)  # 08:00 in Amsterdam
    assert updates.claim_due(session=session, now=late + dt.timedelta(hours=2)) == []
    assert updates.claim_due(session=session, now=row.due_at) == [row.id]


def test_quiet_hours_are_read_in_the_shops_zone_and_can_be_turned_off():
    quiet = parse_quiet_hours("21:00-08:00")
    at = dt.datetime(2026, 11, 17, 5, 0, tzinfo=dt.timezone.utc)  # 06:00 in Amsterdam
    assert release_time(at, quiet, AMS) == dt.datetime(2026, 11, 17, 7, 0, tzinfo=dt.timezone.utc)
    assert release_time(at, None, AMS) == at
    assert parse_quiet_hours("") is None
    for bad in ("9pm-8am", "21:00-21:00", "25:00-08:00"):
        with pytest.raises(ValueError):
            parse_quiet_hours(bad)


def test_the_daily_cap_is_each_conversations_and_a_claim_is_one_processs(session, parcel):
    """Cap 2: a third update to one conversation the same shop day is skipped; another conversation's is not."""
    settings = settings_with(notify_max_per_order_per_day=2)
    other = "whatsapp:31612345678"
    subscribe(session, settings)

    def send_all(now=NOW):
        sent = 0
        for notification_id in updates.claim_due(session=session, now=now):
            if updates.prepare(session=session, notification_id=notification_id, settings=settings, now=now):
                updates.finish(session=session, notification_id=notification_id, state=NoticeState.SENT, now=now)
                sent += 1
        return sent

    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc),
         settings=settings)
    ids = updates.claim_due(session=session, now=NOW)
    assert len(ids) == 1 and updates.claim_due(session=session, now=NOW) == []  # held by the claim
    updates.finish(session=session, notification_id=ids[0], state=NoticeState.SENT, now=NOW)
    feed(session, "AttemptFail", "AttemptFail_001", dt.datetime(2026, 11, 17, 7, 0, tzinfo=dt.timezone.utc),
         settings=settings)
    assert send_all() == 1
    subscribe(session, settings, conversation=other)  # joins now: nothing sent to it yet today
    feed(session, "AvailableForPickup", "AvailableForPickup_001",
         dt.datetime(2026, 11, 17, 8, 0, tzinfo=dt.timezone.utc), settings=settings)
    # The pickup: the first conversation has had its two today, the newcomer none.
    assert send_all() == 1
    states = {r.conversation_id: (r.state, r.outcome)
              for r in session.scalars(select(Notification).where(Notification.kind == "pickup"))}
    assert states[other][0] == "sent"
    assert states[CONVERSATION][0] == "skipped" and "daily limit of 2" in states[CONVERSATION][1]
    # The next shop day the cap starts again.
    tomorrow = NOW + dt.timedelta(days=1)
    assert updates.sent_today(session=session, order_number="WS-5001", now=tomorrow, settings=settings,
                              conversation_id=CONVERSATION) == 0


def test_another_conversations_updates_do_not_use_up_a_shoppers_cap(session, parcel):
    settings = settings_with(notify_max_per_order_per_day=1)
    subscribe(session, settings)
    subscribe(session, settings, conversation="whatsapp:31612345678")
    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc),
         settings=settings)
    ids = updates.claim_due(session=session, now=NOW)
    assert len(ids) == 2
    for notification_id in ids:  # each conversation's first update of the day goes, although both are one order's
        assert updates.prepare(session=session, notification_id=notification_id, settings=settings, now=NOW)
        updates.finish(session=session, notification_id=notification_id, state=NoticeState.SENT, now=NOW)


def test_a_claim_left_by_a_dead_process_is_taken_after_the_lease(session, parcel):
    subscribe(session)
    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc))
    [held] = updates.claim_due(session=session, now=NOW)
    assert updates.claim_due(session=session, now=NOW + dt.timedelta(seconds=30)) == []
    assert updates.claim_due(session=session, now=NOW + updates.CLAIM_LEASE + dt.timedelta(seconds=1)) == [held]


def test_an_update_overtaken_by_a_newer_one_is_skipped(session, parcel):
    subscribe(session)
    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc))
    feed(session, "AttemptFail", "AttemptFail_001", dt.datetime(2026, 11, 17, 8, 0, tzinfo=dt.timezone.utc))
    first, second = [r.id for r in queued(session)]
    assert updates.prepare(session=session, notification_id=first, settings=settings_with(), now=NOW) is None
    assert session.get(Notification, first).outcome.startswith("overtaken")
    assert updates.prepare(session=session, notification_id=second, settings=settings_with(), now=NOW) is not None


def test_the_update_wording_names_the_order_and_the_next_step(session, parcel):
    subscribe(session)
    feed(session, "AttemptFail", "AttemptFail_001", dt.datetime(2026, 11, 17, 8, 0, tzinfo=dt.timezone.utc))
    [row] = queued(session)
    number, response, variables = updates.wording(session=session, notification_id=row.id,
                                                  settings=settings_with(), now=NOW)
    assert (number, response) == ("WS-5001", "utter_update_failed_attempt")
    assert variables["carrier"] == "DHL" and "DHL" in variables["missed"]


def test_a_widget_update_waits_until_a_widget_shows_it(session, parcel):
    subscribe(session)
    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc))
    [row_id] = updates.claim_due(session=session, now=NOW)
    updates.finish(session=session, notification_id=row_id, state=NoticeState.SENT, now=NOW,
                   messages=[{"text": "Good news: order WS-5001 is out for delivery with DHL."}])
    assert updates.unseen_for(session=session, conversation_id=CONVERSATION) == [
        (row_id, [{"text": "Good news: order WS-5001 is out for delivery with DHL."}])]
    # Another conversation cannot mark it seen.
    assert updates.mark_seen(session=session, conversation_id="widget:" + "b" * 32, notification_ids=[row_id],
                             now=NOW) == 0
    assert updates.mark_seen(session=session, conversation_id=CONVERSATION, notification_ids=[row_id], now=NOW) == 1
    assert updates.unseen_for(session=session, conversation_id=CONVERSATION) == []


def test_a_late_estimate_is_worded_as_the_feeds_range_after_the_promise(session, parcel):
    subscribe(session)
    feed(session, "InTransit", "InTransit_003", dt.datetime(2026, 11, 17, 7, 0, tzinfo=dt.timezone.utc),
         estimate=(dt.date(2026, 11, 24), dt.date(2026, 11, 23), dt.date(2026, 11, 24)))
    [row] = queued(session)
    _, response, variables = updates.wording(session=session, notification_id=row.id, settings=settings_with(),
                                             now=NOW)
    # Promised Thu 19 Nov; the feed says Mon 23 to Tue 24 Nov: up to 5 days late.
    assert response == "utter_update_late_estimate"
    assert (variables["when"], variables["late"], variables["promised"]) == (
        "between Mon 23 and Tue 24 Nov", "up to 5 days", "Thu 19 Nov")
    # The next step: a late claim fits from the promise plus POLICY_LATE_CLAIM_DAYS (7): Thu 26 Nov.
    assert variables["next_step"] == "If it still isn't with you on Thu 26 Nov, tell me and we'll refund or replace it."
    # Once the whole window has gone by, no date is given as an estimate.
    _, response, variables = updates.wording(session=session, notification_id=row.id, settings=settings_with(),
                                             now=dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.timezone.utc))
    assert response == "utter_update_late_no_date" and "when" not in variables


def test_a_new_estimate_for_a_parcel_late_already_is_told(session, parcel):
    """Promised Thu 19 Nov, on Mon 23 Nov still moving with no date; the carrier then gives Wed 25 Nov."""
    monday = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone.utc)
    feed(session, "InTransit", "InTransit_003", monday - dt.timedelta(hours=3), now=monday)
    subscribe(session, now=monday)
    assert queued(session) == []
    feed(session, "InTransit", "InTransit_004", monday - dt.timedelta(hours=1), now=monday,
         estimate=(dt.date(2026, 11, 25), None, None))
    assert [(r.kind, r.change_key) for r in queued(session)] == [("late_estimate", "eta:2026-11-25")]


# --- what shoppers write about updates (blind-review findings) -----------------------------------


@pytest.mark.parametrize("text, wanted", [
    ("keine Updates mehr bitte", False),  # was read as consent
    ("actually no. please stop sending me these", False),  # was left subscribed
    ("actually no, stop updates, I'll just check the tracking myself", False),
    ("no updates please, i dont want any messages", False),
    ("non merci, pas de notifications", False),
    ("arrêtez les messages svp", False),
    ("stop texting me", False),
    ("hmm actually turn the updates back on", True),  # was read as stopping them
    ("hmm actually on second thought turn them back on", True),
    ("can you keep me posted about WS-1008? ethan@example.com", True),
    ("can you let me know when my parcel moves?", True),
    ("ok let me know when it ships", True),
    ("si por favor keep me posted", True),
    ("d'accord, tenez-moi au courant", True),
    ("let me know why it's late", None),
    ("I want a refund, stop wasting my time", None),
    ("don't send it to my old address", None),
    ("where is my order", None),
])
def test_what_a_message_says_about_updates(text, wanted):
    from bot.domain.updates import wants_updates

    assert wants_updates(text) is wanted


def test_the_simulated_day_is_signed_and_comes_after_each_parcels_newest_scan(demo_session, settings):
    """simulate-feed's events must change the parcels: a checkpoint older than the newest scan would not."""
    from bot.services.simulation import headers, plan
    from bot.store.queries import get_shipment
    from tests.conftest import NOW

    day = plan(session=demo_session, settings=settings, now=NOW - dt.timedelta(hours=20))
    assert len(day) >= 5
    for event in day:
        update = aftership.parse_webhook(event.body)
        shipment = get_shipment(session=demo_session, carrier_code=update.carrier,
                                tracking_number=update.tracking_number)
        assert shipment is not None and shipment.order.number == event.order_number
        assert update.checkpoints[-1].occurred_at > shipment.last_event_at
        signature = headers("s3cret", event.body)[aftership.SIGNATURE_HEADER]
        assert aftership.signature_is_valid("s3cret", event.body, signature)


# --- attacker-review findings ----------------------------------------------------------------------


def test_a_flood_of_conversations_cannot_make_one_order_write_hundreds_of_updates(session, parcel):
    """30 conversations each proving one order and subscribing: only the newest five follow it."""
    conversations = [f"rest:flood-{n:02d}" for n in range(30)]
    for n, conversation in enumerate(conversations):
        subscribe(session, conversation=conversation, now=NOW + dt.timedelta(seconds=n))
    assert sorted(updates.subscriptions(session=session, conversation_id=c) != [] for c in conversations) == \
        [False] * 25 + [True] * 5
    result = feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0,
                                                                             tzinfo=dt.timezone.utc))
    assert result.queued == updates.MAX_SUBSCRIPTIONS_PER_ORDER == 5
    assert {r.conversation_id for r in queued(session)} == set(conversations[-5:])


def test_a_widget_can_confirm_only_real_ids_of_its_own_updates(session, parcel):
    subscribe(session)
    feed(session, "OutForDelivery", "OutForDelivery_001", dt.datetime(2026, 11, 17, 6, 0, tzinfo=dt.timezone.utc))
    [row_id] = updates.claim_due(session=session, now=NOW)
    updates.finish(session=session, notification_id=row_id, state=NoticeState.SENT, now=NOW)
    # Ids no column can hold (they made the server fail), negative ones, booleans and strings are ignored.
    assert updates.mark_seen(session=session, conversation_id=CONVERSATION,
                             notification_ids=[2**63, 10**30, -1, 0, True, "1", None], now=NOW) == 0
    assert updates.mark_seen(session=session, conversation_id=CONVERSATION, notification_ids=[row_id], now=NOW) == 1


def test_an_exception_without_a_known_reason_gives_the_carriers_words_and_the_link(session, parcel):
    subscribe(session)
    feed(session, "Exception", "Exception_005", dt.datetime(2026, 11, 17, 8, 0, tzinfo=dt.timezone.utc))
    [row] = queued(session)
    _, response, variables = updates.wording(session=session, notification_id=row.id, settings=settings_with(),
                                             now=NOW)
    assert response == "utter_update_exception"
    assert variables["because"] == ' (they say: "Exception scan")'
    assert variables["link"].endswith("JVGL0001") and variables["parcel"] == "your parcel"


def test_an_update_about_one_of_several_parcels_says_which(session, parcel):
    make_shipment(session, parcel.order, tracking="JVGL0002")
    subscribe(session)
    feed(session, "AttemptFail", "AttemptFail_001", dt.datetime(2026, 11, 17, 8, 0, tzinfo=dt.timezone.utc))
    [row] = queued(session)
    _, _, variables = updates.wording(session=session, notification_id=row.id, settings=settings_with(), now=NOW)
    assert variables["parcel"] == "your DHL parcel ending 0001"


def test_the_simulated_day_sent_twice_is_the_same_events(demo_session, settings):
    from bot.services.simulation import plan
    from tests.conftest import NOW as DEMO_NOW

    first = [aftership.parse_webhook(e.body).event_id for e in plan(session=demo_session, settings=settings,
                                                                   now=DEMO_NOW)]
    again = [aftership.parse_webhook(e.body).event_id for e in plan(session=demo_session, settings=settings,
                                                                   now=DEMO_NOW + dt.timedelta(minutes=7))]
    assert first == again and len(set(first)) == len(first)
