"""The Messenger channel: its pure pieces, its Send API client, and the running assistant's webhook.

Webhooks are signed here with the test app secret, posted to the real Rasa
server, and the replies are read from the fake Graph API, which is shared
with the WhatsApp tests: every lookup filters on this test's own PSID and on
the /me/messages path.  What it shares with WhatsApp (signatures, the handshake, text
splitting, retries) is tested piece by piece in test_meta.py; here it is tested in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sanic import Sanic

from bot.config import load_settings
from bot.store import db
from connectors import scoped
from connectors.messenger import (
    QUICK_REPLY_LIMIT,
    Inbound,
    MessengerInput,
    MessengerOutput,
    parse_webhook,
    quick_replies,
)
from connectors.meta import ChannelNotConfigured, MalformedWebhook

from .helpers.servers import CHANNEL_ENV, free_port
from .helpers.shopper import user_events
from .helpers.signing import signature
from .helpers.waits import wait_for, wait_until

WEBHOOK = "/webhooks/messenger/webhook"
SECRET = CHANNEL_ENV["MESSENGER_APP_SECRET"]
PAGE_TOKEN = CHANNEL_ENV["MESSENGER_PAGE_ACCESS_TOKEN"]
PAGE_ID = "104857600000001"


# --- building and sending webhooks ---------------------------------------------------


def new_psid() -> str:
    """A fresh page-scoped id, so tests never read each other's replies."""
    return str(uuid.uuid4().int)[:16]


def new_mid() -> str:
    return f"m_{uuid.uuid4().hex}"


def now_ms() -> int:
    return int(time.time() * 1000)


def text_event(psid: str, text: str, *, mid: Optional[str] = None,
               quick_reply: Optional[str] = None) -> Dict[str, Any]:
    message: Dict[str, Any] = {"mid": mid or new_mid(), "text": text}
    if quick_reply is not None:
        message["quick_reply"] = {"payload": quick_reply}
    return {"sender": {"id": psid}, "recipient": {"id": PAGE_ID}, "timestamp": now_ms(), "message": message}


def postback_event(psid: str, payload: str, *, timestamp: int, mid: Optional[str] = None) -> Dict[str, Any]:
    postback = {"title": "Where is my order?", "payload": payload}
    if mid:
        postback["mid"] = mid
    return {"sender": {"id": psid}, "recipient": {"id": PAGE_ID}, "timestamp": timestamp, "postback": postback}


def page_webhook(*entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    """A Page webhook with one entry per list of messaging events."""
    return {"object": "page", "entry": [{"id": PAGE_ID, "time": now_ms(), "messaging": events}
                                        for events in entries]}


def post_webhook(server: Dict[str, Any], payload: Any = None, *, raw: Optional[bytes] = None,
                 headers: Optional[Dict[str, str]] = None) -> httpx.Response:
    """POST a body to the webhook, signed like Meta signs it unless `headers` are given."""
    body = raw if raw is not None else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json"}
    sent.update(headers if headers is not None else {"X-Hub-Signature-256": signature(body, SECRET)})
    return httpx.post(server["url"] + WEBHOOK, content=body, headers=sent, timeout=30)


def to_psid(psid: str) -> Callable[[Dict[str, Any]], bool]:
    """Requests of the Send API addressed to `psid`."""
    return lambda r: (urlsplit(r["path"]).path.endswith("/me/messages")
                      and r["body"].get("recipient", {}).get("id") == psid)


def messages_to(graph: Any, psid: str) -> List[Dict[str, Any]]:
    """The message objects (not typing indicators) Graph accepted for `psid`."""
    return [r["body"]["message"] for r in graph.received(to_psid(psid)) if "message" in r["body"]]


def sent_to(graph: Any, psid: str) -> List[str]:
    """Everything Graph accepted for `psid`, in order: a sender action by its name, a message by its text."""
    return [r["body"].get("sender_action") or r["body"].get("message", {}).get("text", "")
            for r in graph.received(to_psid(psid))]


def wait_for_message(graph: Any, psid: str, containing: str, timeout: float = 60) -> List[Dict[str, Any]]:
    """Every message to `psid` once one containing `containing` has arrived."""
    graph.wait_for(lambda r: to_psid(psid)(r) and containing in r["body"].get("message", {}).get("text", ""),
                   timeout=timeout)
    found = messages_to(graph, psid)
    assert any(containing in m.get("text", "") for m in found), (containing, found)
    return found


def user_texts(server: Dict[str, Any], psid: str) -> List[str]:
    """What the shopper said, as the conversation's tracker recorded it."""
    return [event.get("text") for event in user_events(server["url"], scoped("messenger", psid), server["token"])]


def log_lines(server: Dict[str, Any], *parts: str) -> int:
    """How many lines the assistant has printed so far that contain every one of `parts`."""
    return sum(all(part in line for part in parts) for line in list(server["output"]))


def header(request: Dict[str, Any], name: str) -> Optional[str]:
    return next((v for k, v in request["headers"].items() if k.lower() == name.lower()), None)


class Shopper:
    """A Messenger user writing to the Page."""

    def __init__(self, server: Dict[str, Any], graph: Any) -> None:
        self.server, self.graph, self.psid = server, graph, new_psid()

    def say(self, text: str, expect: str) -> List[str]:
        """Send `text`; return the texts of the messages it drew, once one contains `expect`."""
        before = len(messages_to(self.graph, self.psid))
        assert post_webhook(self.server, page_webhook([text_event(self.psid, text)])).status_code == 200
        return [m.get("text", "") for m in wait_for_message(self.graph, self.psid, expect)[before:]]


@pytest.fixture(scope="module")
def server(assistant: Dict[str, Any]) -> Dict[str, Any]:
    return assistant


# --- pure pieces ---------------------------------------------------------------------

def test_buttons_become_quick_replies_within_metas_limits():
    """Titles are shortened to 20 characters, at most 13 go out, unusable buttons are left out."""
    buttons = [{"title": "Refund or replacement", "payload": "/refund_or_reship"},
               {"title": "Docs", "url": "https://shop.example.com/help"},           # a link: no payload
               {"title": "Too long", "payload": "/inform" + "x" * 1000}]
    buttons += [{"title": f"Choice {n}", "payload": f"/choice_{n}"} for n in range(20)]
    replies = quick_replies(buttons)
    assert len(replies) == QUICK_REPLY_LIMIT
    assert replies[0] == {"content_type": "text", "title": "Refund or replaceme\u2026", "payload": "/refund_or_reship"}
    assert all(len(r["title"]) <= 20 for r in replies)
    assert [r["title"] for r in replies[1:3]] == ["Choice 0", "Choice 1"]


def test_every_event_of_every_entry_is_read_and_receipts_are_not_turns():
    """Text, quick-reply payloads and postbacks start turns; a photo is read as an attachment; echoes and receipts
    are not read."""
    payload = page_webhook(
        [text_event("1", "where is my order?", mid="m_1"),
         {"sender": {"id": "1"}, "recipient": {"id": PAGE_ID}, "delivery": {"mids": ["m_0"], "watermark": 1}},
         {"sender": {"id": "1"}, "recipient": {"id": PAGE_ID}, "read": {"watermark": 1}}],
        [{"sender": {"id": PAGE_ID}, "recipient": {"id": "2"}, "timestamp": 5,
          "message": {"mid": "m_echo", "is_echo": True, "text": "Hi!"}},
         text_event("2", "Where is my order?", mid="m_2", quick_reply="/order_status"),
         postback_event("2", "/human_handoff", timestamp=7),
         postback_event("1", "/order_status", timestamp=8, mid="m_3"),
         {"sender": {"id": "2"}, "recipient": {"id": PAGE_ID}, "timestamp": 9,
          "message": {"mid": "m_4", "attachments": [{"type": "image", "payload": {"url": "https://x/y.jpg"}}]}}],
    )
    events = parse_webhook(payload)
    assert [(e.sender_id, e.kind, e.text) for e in events] == [
        ("1", "text", "where is my order?"),
        ("2", "quick_reply", "/order_status"),
        ("2", "postback", "/human_handoff"),
        ("1", "postback", "/order_status"),
        ("2", "attachment", ""),
    ]
    assert [e.delivery_id for e in events if e.message_id] == ["m_1", "m_2", "m_3", "m_4"]
    postback = events[2]
    assert postback.message_id is None and postback.delivery_id.startswith("postback:2:7:")
    assert [e.shopper_id for e in events] == ["1", "2", "2", "1", "2"]


def test_a_postback_without_mid_is_the_same_delivery_only_when_repeated_exactly():
    """A re-delivered postback keeps its key; a second tap (new timestamp) gets a new one."""
    first = parse_webhook(page_webhook([postback_event("9", "/order_status", timestamp=100)]))[0]
    again = parse_webhook(page_webhook([postback_event("9", "/order_status", timestamp=100)]))[0]
    tapped = parse_webhook(page_webhook([postback_event("9", "/order_status", timestamp=101)]))[0]
    other = parse_webhook(page_webhook([postback_event("9", "/human_handoff", timestamp=100)]))[0]
    assert first.delivery_id == again.delivery_id
    assert len({first.delivery_id, tapped.delivery_id, other.delivery_id}) == 3


@pytest.mark.parametrize("payload", [
    [],                                                   # not an object
    {"object": "instagram", "entry": []},                 # another product's webhook
    {"object": "page"},                                   # no entries
    {"object": "page", "entry": {"messaging": []}},       # entry not a list
])
def test_bodies_that_are_not_page_webhooks_are_refused(payload):
    """Wrong shapes raise MalformedWebhook (answered with 400), never an unexpected exception."""
    with pytest.raises(MalformedWebhook):
        parse_webhook(payload)


@pytest.mark.parametrize("bad, logged", [
    ("x", "skipped entry[1] of a webhook: not an object"),
    ({"id": PAGE_ID, "messaging": {}}, "skipped entry[1] of a webhook: messaging is not a list"),
    ({"id": PAGE_ID, "messaging": ["x"]}, "skipped entry[1].messaging[0] of a webhook: not an object"),
    ({"id": PAGE_ID, "messaging": [{"message": {"mid": "m_1", "text": "hi"}}]}, "without sender.id"),
])
def test_a_malformed_entry_or_event_is_skipped_and_logged_and_the_rest_is_read(bad, logged, caplog):
    """One bad entry or event costs only itself: refusing the body would make Meta deliver the
    good events again, with the bad one, for days, and none would be answered."""
    psid = new_psid()
    body = page_webhook([text_event(psid, "one")], [text_event(psid, "two")])
    body["entry"].insert(1, bad)
    caplog.set_level(logging.INFO, logger="connectors.messenger")
    assert [event.text for event in parse_webhook(body)] == ["one", "two"]
    assert any(logged in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_an_event_survives_being_stored_and_read_back():
    """What is stored before Meta's 200 is enough to run the turn again after a restart."""
    [event, postback] = parse_webhook(page_webhook([text_event("9", "where is my order?"),
                                                    postback_event("9", "/order_status", timestamp=100)]))
    for inbound in (event, postback):
        assert Inbound.from_json(json.loads(json.dumps(inbound.to_json()))) == inbound
    for broken in ({"sender_id": "9"}, {**event.to_json(), "text": None}, "x"):
        with pytest.raises(ValueError):
            Inbound.from_json(broken)


def test_the_channel_refuses_to_start_without_its_settings():
    """Missing MESSENGER_* settings stop start-up with the variables named."""
    settings = load_settings(environ={}, env_file=Path("/nonexistent"))
    with pytest.raises(ChannelNotConfigured, match="MESSENGER_VERIFY_TOKEN.*MESSENGER_APP_SECRET"):
        MessengerInput.from_settings(settings)
    with pytest.raises(ChannelNotConfigured, match="MESSENGER_PAGE_ACCESS_TOKEN"):
        MessengerOutput.from_settings(settings)
    configured = load_settings(environ={k: v for k, v in CHANNEL_ENV.items() if k.startswith("MESSENGER_")},
                               env_file=Path("/nonexistent"))
    assert MessengerInput.from_settings(configured).name() == "messenger"


# --- the Send API client, against the fake Graph API ------------------------------------


def output_for(graph: Any, **options: Any) -> MessengerOutput:
    settings = load_settings(environ={**{k: v for k, v in CHANNEL_ENV.items() if k.startswith("MESSENGER_")},
                                      "MESSENGER_API_BASE_URL": graph.url}, env_file=Path("/nonexistent"))
    return MessengerOutput.from_settings(settings, **options)


async def test_an_output_built_from_settings_alone_sends_a_reply(fake_graph):
    """Outside any webhook, a reply reaches /me/messages with the token, the proof and RESPONSE."""
    psid = new_psid()
    async with output_for(fake_graph) as output:
        await output.send_text_message(psid, "Your parcel is on its way.")
    [request] = fake_graph.received(to_psid(psid))
    assert request["body"] == {"recipient": {"id": psid}, "messaging_type": "RESPONSE",
                               "message": {"text": "Your parcel is on its way."}}
    assert header(request, "Authorization") == f"Bearer {PAGE_TOKEN}"
    proof = hmac.new(SECRET.encode(), PAGE_TOKEN.encode(), hashlib.sha256).hexdigest()
    assert parse_qs(urlsplit(request["path"]).query) == {"appsecret_proof": [proof]}
    assert PAGE_TOKEN not in request["path"]


async def test_custom_json_is_passed_through_to_the_same_shopper_only(fake_graph):
    """A response's custom part is sent as is, but cannot address another recipient."""
    psid = new_psid()
    card = {"attachment": {"type": "template", "payload": {"template_type": "button", "text": "Track it",
            "buttons": [{"type": "web_url", "url": "https://track.example.com/1", "title": "Track"}]}}}
    async with output_for(fake_graph) as output:
        await output.send_custom_json(psid, card)
        await output.send_custom_json(psid, {"recipient": {"id": "someone-else"}, "sender_action": "mark_seen"})
    bodies = [r["body"] for r in fake_graph.received(to_psid(psid))]
    assert bodies == [{"recipient": {"id": psid}, "messaging_type": "RESPONSE", "message": card},
                      {"recipient": {"id": psid}, "sender_action": "mark_seen"}]
    assert not fake_graph.received(to_psid("someone-else"))


async def test_a_send_is_retried_after_server_errors(fake_graph):
    """Two 500s from Graph, then the message goes through once."""
    psid = new_psid()
    fake_graph.fail_next(2)
    async with output_for(fake_graph, backoff=0.01) as output:
        await output.send_text_message(psid, "Retried text")
    attempts = [r for r in fake_graph.requests if to_psid(psid)(r)]
    assert [r["failed"] for r in attempts] == [True, True, False]
    assert output.sent == 1 and output.failed == 0


async def test_a_send_that_keeps_failing_is_logged_and_does_not_raise(fake_graph, caplog):
    """After the last try the failure is a log line; the caller carries on."""
    psid = new_psid()
    fake_graph.fail_next(3)
    try:
        with caplog.at_level(logging.WARNING, logger="connectors.messenger"):
            async with output_for(fake_graph, attempts=3, backoff=0.01) as output:
                await output.send_text_message(psid, "Never arrives")
    finally:
        fake_graph.fail_next(0)
    assert output.sent == 0 and output.failed == 1
    assert len([r for r in fake_graph.requests if to_psid(psid)(r)]) == 3
    assert any("refused a message to " + psid in r.getMessage() and "HTTP 500" in r.getMessage()
               for r in caplog.records)


async def test_a_typing_indicator_gets_one_try_only(fake_graph):
    """A failed indicator is not retried: the answer behind it must not wait."""
    psid = new_psid()
    fake_graph.fail_next(1)
    async with output_for(fake_graph, backoff=0.01) as output:
        assert await output.send_typing(psid) is False
        assert await output.send_typing(psid) is True
    assert [r["failed"] for r in fake_graph.requests if to_psid(psid)(r)] == [True, False]
    assert output.sent == 0


async def test_an_unreachable_graph_is_retried_then_logged(caplog):
    """Connection errors are retried, then logged; nothing is raised."""
    output = MessengerOutput(page_access_token="t", api_base_url=f"http://127.0.0.1:{free_port()}/v21.0",
                             attempts=2, backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="connectors.messenger"):
        async with output:
            await output.send_text_message("123", "hello")
    assert output.failed == 1
    assert any("could not reach the Send API" in r.getMessage() for r in caplog.records)
    assert any("try 1 of 2" in r.getMessage() for r in caplog.records)


# --- the blueprint in a server of its own ---------------------------------------------


async def test_meta_gets_its_200_while_a_slow_turn_is_still_running(tmp_path, fake_graph):
    """The webhook answers at once; the turn runs afterwards and its reply follows."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'inbox.db'}")
    db.migrate(engine)
    channel = MessengerInput(verify_token="v", app_secret=SECRET, page_access_token=PAGE_TOKEN,
                             api_base_url=fake_graph.url, engine=engine)
    release, started = asyncio.Event(), []

    async def slow_turn(message: Any) -> None:
        started.append(message.text)
        await release.wait()  # the turn takes as long as the test wants
        await message.output_channel.send_text_message(message.sender_id, "Here is your answer.")

    app = Sanic(f"messenger_{uuid.uuid4().hex[:8]}")
    app.config.ACCESS_LOG = False
    app.blueprint(channel.blueprint(slow_turn), url_prefix="/webhooks/messenger")
    port = free_port()
    served = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True)
    # Sanic rewrites some of its own methods when an app starts ("touch-up"), and cannot do it twice
    # in one process unless in test mode, where it keeps the originals (test_meta_durable starts more).
    Sanic.test_mode = True
    try:
        await served.startup()
    finally:
        Sanic.test_mode = False
    await served.before_start()
    await served.after_start()
    psid = new_psid()
    try:
        body = json.dumps(page_webhook([text_event(psid, "where is my order?")])).encode()
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://127.0.0.1:{port}{WEBHOOK}", content=body,
                                       headers={"X-Hub-Signature-256": signature(body, SECRET)}, timeout=10)
        assert answer.status_code == 200
        await wait_for(lambda: started == ["where is my order?"], what="the turn to start", timeout=10)
        assert messages_to(fake_graph, psid) == []          # the turn has not finished ...
        release.set()
        await wait_for(lambda: messages_to(fake_graph, psid), what="the answer", timeout=10)
        assert messages_to(fake_graph, psid) == [{"text": "Here is your answer."}]   # ... and then it has
        typing = [r["body"] for r in fake_graph.received(to_psid(psid)) if "sender_action" in r["body"]]
        assert typing == [{"recipient": {"id": psid}, "sender_action": "typing_on"}]
    finally:
        release.set()
        await served.before_stop()
        served.close()
        await served.wait_closed()
        await served.after_stop()
        await channel.aclose()
        engine.dispose()


# --- the running assistant ------------------------------------------------------------


def answer_the_question(shopper: Shopper) -> str:
    """The marker after a message that must be handled once: the shopper answers "What's your order number?".

    Their turns are handled in order, so a second answer to the question would
    have arrived before the next question; the question must be the one message
    before it.  Returns the order number given.
    """
    number = shopper.server["orders"]["delivered"]["order_number"]
    shopper.say(number, expect="postcode")
    said = [m.get("text", "") for m in messages_to(shopper.graph, shopper.psid)]
    assert len(said) == 2 and "order number" in said[0] and "postcode" in said[1], said
    return number


def test_the_subscription_handshake_echoes_the_challenge_only_for_our_token(server):
    """Meta's verify request gets its challenge back; a wrong token 403, a partial request 400."""
    url = server["url"] + WEBHOOK
    token = CHANNEL_ENV["MESSENGER_VERIFY_TOKEN"]
    good = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"})
    assert (good.status_code, good.text) == (200, "1158201444")
    wrong = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"})
    assert wrong.status_code == 403 and "1" != wrong.text
    assert httpx.get(url, params={"hub.mode": "subscribe", "hub.challenge": "1"}).status_code == 400
    assert httpx.get(url).status_code == 400
    assert httpx.get(server["url"] + "/webhooks/messenger/").json() == {"status": "ok"}


def forged_headers(kind: str, body: bytes) -> Dict[str, str]:
    if kind == "sha1-only":
        return {"X-Hub-Signature": "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()}
    if kind == "other-body":
        return {"X-Hub-Signature-256": signature(body + b"\n", SECRET)}
    if kind == "other-secret":
        return {"X-Hub-Signature-256": signature(body, "not-our-secret")}
    return {}


@pytest.mark.parametrize("kind", [
    "none",          # no signature header
    "other-body",    # a signature, but of a different body
    "other-secret",  # signed with another app's secret
    "sha1-only",     # only the legacy SHA-1 header, correctly computed
])
def test_unsigned_or_badly_signed_webhooks_are_refused(server, fake_graph, kind):
    """Only a valid X-Hub-Signature-256 gets in: the others get 403, a log line and no answer."""
    shopper = Shopper(server, fake_graph)
    body = json.dumps(page_webhook([text_event(shopper.psid, "where is my order?")])).encode()
    headers = forged_headers(kind, body)
    refusals = log_lines(server, "messenger: refused a webhook")
    assert post_webhook(server, raw=body, headers=headers).status_code == 403
    # A genuine message from the same shopper afterwards: its answer is all the shopper gets.
    shopper.say("hi", expect="order assistant")
    sent = sent_to(fake_graph, shopper.psid)
    assert len(sent) == 2 and sent[0] == "typing_on" and "order assistant" in sent[1], sent
    assert user_texts(server, shopper.psid) == ["hi"]
    wait_until(lambda: log_lines(server, "messenger: refused a webhook") > refusals, what="the refusal's log line")


@pytest.mark.parametrize("raw, reason", [
    (b'{"object": "page", "entry": [', "not JSON"),
    (b"\xff\xfe not text", "not JSON"),
    (b'["object", "page"]', "not a JSON object"),
    (b'{"object": "page", "entry": "nope"}', "entry is not a list"),
])
def test_signed_bodies_that_are_not_page_webhooks_get_400(server, raw, reason):
    """A malformed body, even signed, is a 400 with a log line, never a 500."""
    logged = log_lines(server, "messenger: refused a signed webhook", reason)
    answer = post_webhook(server, raw=raw)
    assert answer.status_code == 400
    wait_until(lambda: log_lines(server, "messenger: refused a signed webhook", reason) > logged,
               what=f"the log line saying {reason!r}", timeout=10)


def test_a_shopper_gets_their_orders_status_on_messenger(server, fake_graph):
    """Ask, give the order number, prove it with the postcode: the status and tracking number arrive."""
    order = server["orders"]["in_transit_on_time"]
    shopper = Shopper(server, fake_graph)
    shopper.say("where is my order?", expect="order number")
    shopper.say(order["order_number"], expect="postcode")
    tracking = order["tracking_numbers"][0]
    replies = " ".join(shopper.say(order["postcode"], expect=tracking))
    assert "that matches" in replies and "on its way" in replies
    sent = fake_graph.received(to_psid(shopper.psid))
    assert all(r["body"]["recipient"] == {"id": shopper.psid} for r in sent)
    assert all(r["body"]["messaging_type"] == "RESPONSE" for r in sent if "message" in r["body"])
    assert all(header(r, "Authorization") == f"Bearer {PAGE_TOKEN}" for r in sent)


def test_every_message_of_a_batch_is_answered_in_order(server, fake_graph):
    """Two entries, two senders, three messages in one webhook: each sender gets each answer."""
    first, second = new_psid(), new_psid()
    batch = page_webhook([text_event(first, "where is my order?")],
                         [text_event(second, "hi"), text_event(second, "where is my order?")])
    assert post_webhook(server, batch).status_code == 200
    wait_for_message(fake_graph, first, "order number")
    answers = wait_for_message(fake_graph, second, "order number")
    texts = [m.get("text", "") for m in answers]
    assert any("order assistant" in t for t in texts)
    greeting = next(i for i, t in enumerate(texts) if "order assistant" in t)
    assert greeting < next(i for i, t in enumerate(texts) if "order number" in t)
    assert user_texts(server, second) == ["hi", "where is my order?"]


def test_a_batch_with_a_malformed_entry_is_answered_for_the_good_ones(server, fake_graph):
    """An entry that is not an object between two good ones: 200, both senders answered, the bad
    entry skipped with a log line.  A 400 would make Meta deliver all of it again, for days."""
    first, second = new_psid(), new_psid()
    batch = page_webhook([text_event(first, "hi")], [text_event(second, "where is my order?")])
    batch["entry"].insert(1, "not an entry")
    logged = log_lines(server, "messenger: skipped entry[1] of a webhook: not an object")
    assert post_webhook(server, batch).status_code == 200
    wait_for_message(fake_graph, first, "order assistant")
    wait_for_message(fake_graph, second, "order number")
    wait_until(lambda: log_lines(server, "messenger: skipped entry[1] of a webhook: not an object") > logged,
               what="the skipped entry's log line", timeout=10)


def test_buttons_arrive_as_quick_replies_and_their_payload_is_understood(server, fake_graph):
    """The greeting's buttons are quick replies; tapping one sends its payload, which the bot follows."""
    psid = new_psid()
    assert post_webhook(server, page_webhook([text_event(psid, "hi")])).status_code == 200
    [greeting] = [m for m in wait_for_message(fake_graph, psid, "order assistant") if "quick_replies" in m]
    replies = greeting["quick_replies"]
    assert {"content_type": "text", "title": "Where is my order?", "payload": "/order_status"} in replies
    assert all(len(r["title"]) <= 20 for r in replies)
    assert "Refund or replaceme\u2026" in [r["title"] for r in replies]
    tapped = text_event(psid, "Where is my order?", quick_reply="/order_status")
    assert post_webhook(server, page_webhook([tapped])).status_code == 200
    wait_for_message(fake_graph, psid, "order number")
    assert user_texts(server, psid) == ["hi", "/order_status"]


def test_a_tapped_postback_button_starts_the_turn_its_payload_names(server, fake_graph):
    """A postback (button template, menu) is read by its payload; a re-delivery is not a new turn."""
    shopper, tapped_at = Shopper(server, fake_graph), now_ms()
    webhook = page_webhook([postback_event(shopper.psid, "/order_status", timestamp=tapped_at)])
    assert post_webhook(server, webhook).status_code == 200
    assert post_webhook(server, webhook).status_code == 200
    wait_for_message(fake_graph, shopper.psid, "order number")
    number = answer_the_question(shopper)
    assert user_texts(server, shopper.psid) == ["/order_status", number]


def test_a_redelivered_message_is_answered_once(server, fake_graph):
    """The same mid twice at once, and again after the answer, makes one turn and one reply."""
    shopper = Shopper(server, fake_graph)
    webhook = page_webhook([text_event(shopper.psid, "where is my order?")])
    assert post_webhook(server, webhook).status_code == 200
    assert post_webhook(server, webhook).status_code == 200
    wait_for_message(fake_graph, shopper.psid, "order number")
    assert post_webhook(server, webhook).status_code == 200
    number = answer_the_question(shopper)
    assert user_texts(server, shopper.psid) == ["where is my order?", number]


def test_receipts_and_echoes_get_no_answer(server, fake_graph):
    """Delivery and read receipts and the Page's own echoes start no turn and send nothing."""
    psid = new_psid()
    webhook = page_webhook([
        {"sender": {"id": psid}, "recipient": {"id": PAGE_ID}, "timestamp": now_ms(),
         "delivery": {"mids": [new_mid()], "watermark": now_ms()}},
        {"sender": {"id": psid}, "recipient": {"id": PAGE_ID}, "timestamp": now_ms(),
         "read": {"watermark": now_ms()}},
        {"sender": {"id": PAGE_ID}, "recipient": {"id": psid}, "timestamp": now_ms(),
         "message": {"mid": new_mid(), "is_echo": True, "app_id": 1517776481860111, "text": "where is my order?"}},
        # The marker: a genuine message after them in the same webhook.  The shopper's events are
        # handled in order, so a turn for a receipt would have answered before the greeting; an echo's
        # turn (the Page's) would have started before it too, and its typing indicator gone out at once.
        text_event(psid, "hi"),
    ])
    assert post_webhook(server, webhook).status_code == 200
    wait_for_message(fake_graph, psid, "order assistant")
    sent = sent_to(fake_graph, psid)
    assert len(sent) == 2 and sent[0] == "typing_on" and "order assistant" in sent[1], sent
    assert user_texts(server, psid) == ["hi"]
    assert fake_graph.received(to_psid(PAGE_ID)) == [] and user_texts(server, PAGE_ID) == []


def test_the_webhook_is_acknowledged_before_the_reply_is_sent(server, fake_graph):
    """When Meta has its 200, the reply has not been sent yet; it follows."""
    psid = new_psid()
    answer = post_webhook(server, page_webhook([text_event(psid, "where is my order?")]))
    assert answer.status_code == 200 and answer.text == "EVENT_RECEIVED"
    assert messages_to(fake_graph, psid) == []
    wait_for_message(fake_graph, psid, "order number")


def test_a_reply_graph_refuses_at_first_is_retried_and_arrives_once(server, fake_graph):
    """Graph's 500s are retried: the shopper still gets exactly one answer.

    The first request of a turn is the typing indicator, which gets a single
    try (it must not hold the answer back); the second is the answer itself.
    """
    psid = new_psid()
    fake_graph.fail_next(2)
    assert post_webhook(server, page_webhook([text_event(psid, "where is my order?")])).status_code == 200
    wait_for_message(fake_graph, psid, "order number")
    attempts = [(r["failed"], "message" in r["body"]) for r in fake_graph.requests if to_psid(psid)(r)]
    assert attempts == [(True, False), (True, True), (False, True)]
    assert len(messages_to(fake_graph, psid)) == 1


def test_a_photo_gets_a_note_asking_for_text_and_no_turn(server, fake_graph):
    """A picture of a damaged parcel is not met with silence: the shopper hears that only text is read."""
    psid = new_psid()
    webhook = page_webhook([
        {"sender": {"id": psid}, "recipient": {"id": PAGE_ID}, "timestamp": now_ms(),
         "message": {"mid": new_mid(), "attachments": [{"type": "image", "payload": {"url": "https://x/y.jpg"}}]}},
    ])
    assert post_webhook(server, webhook).status_code == 200
    wait_for_message(fake_graph, psid, "only read text")
    assert user_texts(server, psid) == []
