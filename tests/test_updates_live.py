"""Proactive updates against the running servers: the signed feeds over HTTP, consent in conversation,
updates in the transcript, the 24-hour window on WhatsApp, a restart, and an open widget.

One assistant for the module (its own store and tracker store, so a restart keeps
conversations), with both feeds on, no quiet hours and a WhatsApp template.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any, Dict, List

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from bot.domain import aftership
from bot.store.models import FeedReceipt, Notification, UpdateSubscription
from tests.conftest import ACTION_TOKEN
from tests.helpers.servers import CHANNEL_ENV, ROOT, Server, free_port
from tests.helpers.shopper import rest_messages, rest_say, tracker
from tests.helpers.waits import wait_until

pytestmark = pytest.mark.slow

AFTERSHIP_SECRET = "as-test-secret-0123456789abcdef0123456789"
OWN_SECRET = "own-test-secret-0123456789abcdef012345678"
TOKEN = "updates-token"
TEMPLATE = "order_update"


@pytest.fixture(scope="module")
def live(tmp_path_factory, fake_graph):
    import os
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("updates")
    endpoints = tmp / "endpoints.yml"
    endpoints.write_text("action_endpoint:\n  url: ${ACTION_ENDPOINT_URL}\n"
                         "  headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}\n"
                         f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tmp / 'tracker.db'}\n")
    env = {**os.environ, **CHANNEL_ENV,
           "DATABASE_URL": f"sqlite:///{tmp / 'store.db'}", "RASA_PORT": str(free_port()),
           "ACTION_PORT": str(free_port()), "CONSOLE_PORT": str(free_port()), "RASA_AUTH_TOKEN": TOKEN,
           "ACTION_SERVER_TOKEN": ACTION_TOKEN, "RASA_ENDPOINTS": str(endpoints),
           "WHATSAPP_API_BASE_URL": fake_graph.url, "MESSENGER_API_BASE_URL": fake_graph.url,
           "AFTERSHIP_WEBHOOK_SECRET": AFTERSHIP_SECRET, "TRACKING_WEBHOOK_SECRET": OWN_SECRET,
           "NOTIFY_QUIET_HOURS": "", "NOTIFY_POLL_SECONDS": "0.3", "WHATSAPP_UPDATE_TEMPLATE": TEMPLATE}
    subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=env, check=True, capture_output=True)
    listed = subprocess.run([sys.executable, "-m", "bot", "demo-orders", "--json"], cwd=ROOT, env=env, check=True,
                            capture_output=True, text=True)
    store = create_engine(env["DATABASE_URL"], future=True)
    server = Server(env=env)
    with server.start():
        yield {"url": f"http://127.0.0.1:{env['RASA_PORT']}", "env": env, "server": server, "store": store,
               "orders": {r["scenario"]: r for r in json.loads(listed.stdout)}, "graph": fake_graph}
    store.dispose()


def post_feed(live, body: Any, *, secret: str = AFTERSHIP_SECRET, header: str = aftership.SIGNATURE_HEADER,
              path: str = "/webhooks/aftership/webhook", signature: str = "") -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if secret or signature:
        headers[header] = signature or aftership.sign(secret, raw)
    return httpx.post(live["url"] + path, content=raw, headers=headers, timeout=30)


def checkpoint(order: Dict[str, Any], tag: str, subtag: str, message: str, *, event_id: str = "",
               minutes_ago: int = 5) -> Dict[str, Any]:
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes_ago)
    slug = {"royalmail": "royal-mail"}.get(order["carrier"], order["carrier"])
    return aftership.sample_webhook(tracking_number=order["tracking_numbers"][-1], slug=slug, tag=tag, subtag=subtag,
                                    message=message, checkpoint_time=when, location="Local depot",
                                    event_id=event_id or None)


def scalar(live, query):
    with live["store"].connect() as conn:
        return conn.execute(query).scalar()


def notifications(live, conversation: str) -> List[Any]:
    with live["store"].connect() as conn:
        return list(conn.execute(select(Notification).where(Notification.conversation_id == conversation)
                                 .order_by(Notification.id)))


def verify(live, sender: str, order: Dict[str, Any]) -> List[Dict[str, Any]]:
    text = f"where is my order {order['order_number']}? my email is {order['email']}"
    return rest_messages(live["url"], sender, text)


def bot_texts(live, conversation: str) -> List[str]:
    events = tracker(live["url"], conversation, TOKEN).get("events") or []
    return [e.get("text") or "" for e in events if e.get("event") == "bot"]


# --- the feed over HTTP --------------------------------------------------------------------------


def test_forged_malformed_and_replayed_webhooks(live):
    order = live["orders"]["info_received"]
    body = checkpoint(order, "InTransit", "InTransit_002", "Picked up", event_id="evt-forged-1")
    raw = json.dumps(body).encode()
    assert post_feed(live, raw, secret="").status_code == 401  # no signature
    assert post_feed(live, raw, secret="not-the-secret").status_code == 401
    tampered = raw.replace(b"Picked up", b"Delivered")
    assert post_feed(live, tampered, signature=aftership.sign(AFTERSHIP_SECRET, raw)).status_code == 401
    assert scalar(live, select(func.count()).select_from(FeedReceipt)
                  .where(FeedReceipt.event_id == "evt-forged-1")) == 0
    first = post_feed(live, raw)
    assert first.status_code == 200 and first.json()["events_stored"] == 1
    again = post_feed(live, raw)
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["events_stored"] == 0
    assert scalar(live, select(func.count()).select_from(FeedReceipt)
                  .where(FeedReceipt.event_id == "evt-forged-1")) == 1
    bad = post_feed(live, b'{"event_id": "x", "ts": 1764000000, "msg": {"slug": "dhl"}}')
    assert bad.status_code == 400 and "tracking_number" in bad.json()["error"]
    assert post_feed(live, b"not json at all").status_code == 400


def test_an_unknown_tracking_number_is_recorded_and_answered_200(live):
    body = aftership.sample_webhook(tracking_number="UNKNOWN4242", slug="dhl", tag="InTransit",
                                    subtag="InTransit_001", message="moving",
                                    checkpoint_time=dt.datetime.now(dt.timezone.utc))
    answer = post_feed(live, body)
    assert answer.status_code == 200 and answer.json()["unknown_tracking_numbers"] == ["UNKNOWN4242"]
    assert scalar(live, select(FeedReceipt.known).where(FeedReceipt.tracking_number == "UNKNOWN4242")) is False


def test_the_own_event_format_needs_its_own_signature(live):
    order = live["orders"]["info_received"]
    batch = {"events": [{"carrier": order["carrier"], "tracking_number": order["tracking_numbers"][-1],
                         "occurred_at": (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=3)).isoformat(),
                         "code": "transit", "description": "moving on", "location": "Hub"}]}
    path, header = "/webhooks/tracking/webhook", "x-tracking-hmac-sha256"
    assert post_feed(live, batch, path=path, header=header, secret=AFTERSHIP_SECRET).status_code == 401
    refused = post_feed(live, {"events": [{"carrier": "dhl"}]}, path=path, header=header, secret=OWN_SECRET)
    assert refused.status_code == 400 and refused.json()["problems"]
    accepted = post_feed(live, batch, path=path, header=header, secret=OWN_SECRET)
    assert accepted.status_code == 200, accepted.text
    assert post_feed(live, batch, path=path, header=header, secret=OWN_SECRET).json()["duplicate"] is True


def test_the_feed_endpoints_are_off_without_a_secret(assistant):
    body = json.dumps({"event_id": "x"}).encode()
    answer = httpx.post(assistant["url"] + "/webhooks/aftership/webhook", content=body,
                        headers={aftership.SIGNATURE_HEADER: aftership.sign("anything", body)}, timeout=30)
    assert answer.status_code == 404


# --- consent and updates in the conversation ------------------------------------------------------


def test_a_shopper_opts_in_gets_the_update_in_the_conversation_and_asks_about_it(live):
    order = live["orders"]["in_transit_on_time"]
    sender, conversation = "updates-optin", "rest:updates-optin"
    answer = verify(live, sender, order)
    offer = answer[-1]
    assert "Shall I message you here if anything changes" in offer["text"]
    assert [b["payload"] for b in offer.get("buttons", [])][0] == "/subscribe_updates"
    said = rest_say(live["url"], sender, "/subscribe_updates")
    assert any("I'll message you here when anything changes with order " + order["order_number"] in t for t in said)
    assert scalar(live, select(func.count()).select_from(UpdateSubscription).where(
        UpdateSubscription.conversation_id == conversation, UpdateSubscription.ended_at.is_(None))) == 1

    post_feed(live, checkpoint(order, "AttemptFail", "AttemptFail_002", "Recipient not available"))
    update = wait_until(lambda: [t for t in bot_texts(live, conversation) if t.startswith("Update on order")],
                        what="the update in the conversation")
    assert "tried to deliver your parcel but nobody could take it" in update[0]
    assert [n.state for n in notifications(live, conversation)][-1] == "sent"
    # A follow-up is about that order, without being asked to prove it again.
    reply = " ".join(rest_say(live["url"], sender, "ok so what do I do now?"))
    assert "email" not in reply.lower()
    assert any(word in reply for word in ("deliver", "collect", "ServicePoint", "redeliver", "pick"))


def test_stop_updates_ends_them(live):
    order = live["orders"]["shipped_redirect_possible"]
    sender, conversation = "updates-stop", "rest:updates-stop"
    verify(live, sender, order)
    rest_say(live["url"], sender, "yes keep me posted")
    said = " ".join(rest_say(live["url"], sender, "stop updates"))
    assert "no more updates about order " + order["order_number"] in said
    post_feed(live, checkpoint(order, "OutForDelivery", "OutForDelivery_001", "Out for delivery"))
    # The feed's call has returned: whatever it queued is in the store already; nothing was queued here.
    assert [n.state for n in notifications(live, conversation) if n.state != "skipped"] == []


def test_nobody_gets_an_update_without_asking(live):
    order = live["orders"]["late_no_reason"]
    sender, conversation = "updates-noconsent", "rest:updates-noconsent"
    verify(live, sender, order)
    before = len(bot_texts(live, conversation))
    post_feed(live, checkpoint(order, "OutForDelivery", "OutForDelivery_001", "Out for delivery"))
    assert notifications(live, conversation) == []
    assert len(bot_texts(live, conversation)) == before


# --- WhatsApp: the 24-hour window -----------------------------------------------------------------


def seed_whatsapp(live, wa_id: str, order: Dict[str, Any], hours_ago: float) -> str:
    """A WhatsApp conversation whose shopper last wrote `hours_ago` hours ago, subscribed to `order`."""
    conversation = f"whatsapp:{wa_id}"
    when = time.time() - hours_ago * 3600
    events = [{"event": "action", "name": "action_session_start", "timestamp": when - 1},
              {"event": "session_started", "timestamp": when - 1},
              {"event": "action", "name": "action_listen", "timestamp": when - 1},
              {"event": "user", "text": "where is my parcel", "timestamp": when, "input_channel": "whatsapp",
               "parse_data": {"intent": {"name": "order_status", "confidence": 1.0}, "entities": []}},
              {"event": "action", "name": "action_listen", "timestamp": when + 1}]
    answer = httpx.put(f"{live['url']}/conversations/{conversation}/tracker/events", params={"token": TOKEN},
                       json=events, timeout=30)
    assert answer.status_code == 200, answer.text
    with live["store"].begin() as conn:
        conn.execute(UpdateSubscription.__table__.insert().values(
            conversation_id=conversation, channel="whatsapp", order_number=order["order_number"],
            created_at=dt.datetime.now(dt.timezone.utc)))
    return conversation


def to_number(wa_id):
    return lambda request: request["body"].get("to") == wa_id


def test_whatsapp_inside_the_window_gets_text_and_outside_it_the_template(live):
    graph = live["graph"]
    inside, outside = "31611110001", "31611110002"
    order_in, order_out = live["orders"]["failed_attempt"], live["orders"]["available_for_pickup"]
    seed_whatsapp(live, inside, order_in, hours_ago=2)
    conversation_out = seed_whatsapp(live, outside, order_out, hours_ago=30)
    post_feed(live, checkpoint(order_in, "OutForDelivery", "OutForDelivery_001", "Out for delivery again"))
    post_feed(live, checkpoint(order_out, "Exception", "Exception_007", "Address could not be found"))
    [sent_in] = graph.wait_for(to_number(inside))
    assert sent_in["body"]["type"] == "text" and "out for delivery" in sent_in["body"]["text"]["body"]
    [sent_out] = graph.wait_for(to_number(outside))
    template = sent_out["body"]["template"]
    assert sent_out["body"]["type"] == "template" and template["name"] == TEMPLATE
    parameters = [p["text"] for p in template["components"][0]["parameters"]]
    assert parameters[0] == order_out["order_number"] and parameters[1] == "held up by a problem"
    row = wait_until(lambda: [n for n in notifications(live, conversation_out) if n.state == "sent"],
                     what="the template update recorded")[0]
    assert "template" in row.outcome
    # It is in the transcript too, so a reply is understood about that order.
    assert any(t.startswith("Update on order " + order_out["order_number"]) for t in bot_texts(live, conversation_out))


# --- a restart between storing and sending --------------------------------------------------------


def test_a_restart_between_storing_and_sending_still_sends_exactly_once(live):
    from bot.config import load_settings
    from bot.services import updates
    from bot.store import db

    server, env = live["server"], live["env"]
    order = live["orders"]["late_with_reason"]
    conversation = "rest:updates-restart"
    settings = load_settings(environ={k: v for k, v in env.items() if k.isupper()}, env_file=ROOT / "missing.env")
    server.stop()
    engine = db.make_engine(env["DATABASE_URL"])
    with db.session_scope(engine) as session:
        # What a webhook stored, with the update it queued, before the process died.
        updates.subscribe(session=session, conversation_id=conversation, channel="rest",
                          order_number=order["order_number"], settings=settings, now=dt.datetime.now(dt.timezone.utc))
        body = checkpoint(order, "OutForDelivery", "OutForDelivery_001", "Out for delivery")
        result = updates.ingest_aftership(session=session, update=aftership.parse_webhook(json.dumps(body).encode()),
                                          settings=settings, now=dt.datetime.now(dt.timezone.utc))
        assert result.queued == 1
    engine.dispose()
    server.start()
    said = wait_until(lambda: [t for t in bot_texts(live, conversation) if "out for delivery" in t],
                      what="the update after the restart")
    [row] = wait_until(lambda: [n for n in notifications(live, conversation) if n.state == "sent"],
                       what="the update marked sent")
    # The worker keeps polling; the update stays said once.
    wait_until(lambda: scalar(live, select(func.count()).select_from(Notification).where(
        Notification.conversation_id == conversation, Notification.state == "queued")) == 0, what="nothing queued")
    assert len(said) == 1 and len([t for t in bot_texts(live, conversation) if "out for delivery" in t]) == 1


def test_an_update_said_before_a_crash_is_not_said_again(live):
    """The process said it and died before recording so: the transcript shows it, and it is only marked sent."""
    from bot.config import load_settings
    from bot.services import updates
    from bot.store import db

    server, env = live["server"], live["env"]
    order = live["orders"]["shipped_no_redirect"]
    conversation = "rest:updates-crash"
    settings = load_settings(environ={k: v for k, v in env.items() if k.isupper()}, env_file=ROOT / "missing.env")
    server.stop()
    engine = db.make_engine(env["DATABASE_URL"])
    now = dt.datetime.now(dt.timezone.utc)
    with db.session_scope(engine) as session:
        updates.subscribe(session=session, conversation_id=conversation, channel="rest",
                          order_number=order["order_number"], settings=settings, now=now)
        body = checkpoint(order, "AvailableForPickup", "AvailableForPickup_001", "Ready for collection")
        updates.ingest_aftership(session=session, update=aftership.parse_webhook(json.dumps(body).encode()),
                                 settings=settings, now=now)
        # Claimed by the process that died; held well past the restart, until the test lets the claim lapse.
        [notification_id] = updates.claim_due(session=session, now=now + dt.timedelta(minutes=10))
    engine.dispose()
    server.start()
    # What the dead process had written to the conversation before it died (stamped after the session start
    # the server adds to a new conversation, as a real trigger's events are).
    moment = time.time() + 2
    said = {"event": "user", "text": "/EXTERNAL_tracking_update", "timestamp": moment,
            "parse_data": {"intent": {"name": "EXTERNAL_tracking_update", "confidence": 1.0},
                           "entities": [{"entity": "notification_id", "value": str(notification_id)}]}}
    answer = httpx.post(f"{live['url']}/conversations/{conversation}/tracker/events", params={"token": TOKEN},
                        json=[said, {"event": "bot", "text": "Update on order (said before the crash)",
                                     "timestamp": moment + 0.1}], timeout=30)
    assert answer.status_code == 200, answer.text
    # The claim lapses after its lease; the worker then finds it in the transcript and only records it.
    with live["store"].begin() as conn:
        conn.execute(Notification.__table__.update().where(Notification.id == notification_id)
                     .values(claimed_at=now - dt.timedelta(minutes=5)))
    row = wait_until(lambda: [n for n in notifications(live, conversation) if n.state == "sent"],
                     what="the update recorded as sent")[0]
    assert row.outcome == "found in the conversation after a restart"
    assert [t for t in bot_texts(live, conversation) if t.startswith("Update on order")] == [
        "Update on order (said before the crash)"]


# --- the widget ---------------------------------------------------------------------------------


async def test_an_update_appears_in_an_open_widget_and_waits_for_a_closed_one(live, browser):
    from playwright.async_api import expect

    from tests.test_widget import bot_bubbles, open_demo, say

    order = live["orders"]["out_for_delivery"]
    page = await open_demo(browser, live["url"])
    await say(page, f"where is {order['order_number']}, email {order['email']}")
    button = page.get_by_role("button", name="Yes, keep me posted")
    await button.wait_for(timeout=60_000)
    await button.click()
    await expect(bot_bubbles(page).last).to_contain_text("I'll message you here when anything changes",
                                                         timeout=60_000)

    post_feed(live, checkpoint(order, "AttemptFail", "AttemptFail_002", "Recipient not available", minutes_ago=4))
    await expect(bot_bubbles(page).last).to_contain_text("tried to deliver your parcel", timeout=60_000)
    conversation = [n.conversation_id for n in notifications_like(live, "widget:")][-1]
    wait_until(lambda: [n for n in notifications(live, conversation) if n.seen_at is not None],
               what="the open widget confirming it showed the update")

    # The page goes away; the next update waits for the widget to be opened again (same tab, same session).
    await page.goto("about:blank")
    post_feed(live, checkpoint(order, "AvailableForPickup", "AvailableForPickup_001", "Ready for collection",
                               minutes_ago=1))
    wait_until(lambda: [n for n in notifications(live, conversation) if n.kind == "pickup" and n.state == "sent"],
               what="the pickup update sent while no widget was open")
    await page.goto(live["url"] + "/widget/")
    if await page.get_by_role("button", name=re.compile("^Open chat")).is_visible():
        await page.get_by_role("button", name=re.compile("^Open chat")).click()
    await expect(bot_bubbles(page).last).to_contain_text("is waiting for you at", timeout=60_000)
    await expect(page.locator(".wsw-bubble", has_text="tried to deliver your parcel")).to_have_count(1)
    wait_until(lambda: [n for n in notifications(live, conversation) if n.kind == "pickup" and n.seen_at],
               what="the widget confirming the waiting update")


def notifications_like(live, prefix: str) -> List[Any]:
    with live["store"].connect() as conn:
        return list(conn.execute(select(Notification).where(Notification.conversation_id.like(prefix + "%"))
                                 .order_by(Notification.id)))


def test_messenger_outside_the_window_without_a_template_is_recorded_not_sent(live):
    graph = live["graph"]
    psid = "7700112233445566"
    conversation = f"messenger:{psid}"
    order = live["orders"]["exception"]
    when = time.time() - 30 * 3600
    events = [{"event": "user", "text": "where is my parcel", "timestamp": when, "input_channel": "messenger",
               "parse_data": {"intent": {"name": "order_status", "confidence": 1.0}, "entities": []}},
              {"event": "action", "name": "action_listen", "timestamp": when + 1}]
    assert httpx.put(f"{live['url']}/conversations/{conversation}/tracker/events", params={"token": TOKEN},
                     json=events, timeout=30).status_code == 200
    with live["store"].begin() as conn:
        conn.execute(UpdateSubscription.__table__.insert().values(
            conversation_id=conversation, channel="messenger", order_number=order["order_number"],
            created_at=dt.datetime.now(dt.timezone.utc)))
    post_feed(live, checkpoint(order, "AttemptFail", "AttemptFail_001", "Delivery attempted"))
    [row] = wait_until(lambda: [n for n in notifications(live, conversation) if n.state != "queued"],
                       what="the update closed")
    assert row.state == "not_sent" and "MESSENGER_UPDATE_TEMPLATE" in row.outcome
    assert graph.received(lambda r: (r["body"].get("recipient") or {}).get("id") == psid) == []
    assert not [t for t in bot_texts(live, conversation) if t.startswith("Update on order")]


async def test_the_messenger_utility_template_is_sent_as_the_send_api_expects(fake_graph):
    from connectors.messenger import MessengerOutput

    output = MessengerOutput(page_access_token="t", api_base_url=fake_graph.url)
    try:
        assert await output.send_utility_template("messenger:5566", "order_update", "en_US",
                                                   ["WS-1011", "held up by a problem", "Thu 10 Dec"])
    finally:
        await output.aclose()
    [sent] = fake_graph.wait_for(lambda r: (r["body"].get("recipient") or {}).get("id") == "5566")
    body = sent["body"]
    assert body["messaging_type"] == "UTILITY"
    payload = body["message"]["attachment"]["payload"]
    assert (payload["template_type"], payload["template_name"], payload["language"]) == (
        "utility", "order_update", "en_US")
    assert [p["text"] for p in payload["components"][0]["parameters"]] == [
        "WS-1011", "held up by a problem", "Thu 10 Dec"]


# --- attacker-review findings ---------------------------------------------------------------------


def test_a_body_too_large_for_any_route_is_refused_before_it_is_read(live):
    """A declared 90 MB body was read into memory before the webhook could refuse it; now 413 at once."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(live["url"])
    with socket.create_connection((address.hostname, address.port), timeout=10) as raw:
        raw.sendall(b"POST /webhooks/aftership/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"aftership-hmac-sha256: AAAA\r\nContent-Length: 90000000\r\n\r\n{")
        answer = raw.recv(4096)  # nothing more of the body is ever sent: the answer must come without it
    assert answer.startswith(b"HTTP/1.1 413")


def test_stop_updates_works_while_the_bot_is_asking_for_a_proof(live):
    order, other = live["orders"]["split_shipment"], live["orders"]["late_with_reason"]
    sender = "updates-midform"
    verify(live, sender, order)
    rest_say(live["url"], sender, "/subscribe_updates")
    asked = " ".join(rest_say(live["url"], sender, f"and where is {other['order_number']}?"))
    assert "email" in asked.lower()
    said = " ".join(rest_say(live["url"], sender, "stop updates"))
    assert "no more updates about order " + order["order_number"] in said
    assert "doesn't look like" not in said
