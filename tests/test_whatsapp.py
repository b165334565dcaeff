"""The WhatsApp channel: its pure parts, its sender against the fake Graph API, and whole
conversations through the running assistant's webhook, signed like Meta signs them.

What it shares with Messenger (signatures, the handshake, text splitting, retries) is tested
piece by piece in test_meta.py; here it is tested in place, over HTTP."""

from __future__ import annotations

import json
import logging
import random
import string
import time
import uuid
from typing import Any, Dict, List, Optional

import httpx
import pytest

from connectors import scoped
from connectors.meta import ChannelNotConfigured, MalformedWebhook
from connectors.whatsapp import (
    BUTTON_ID_LIMIT,
    BUTTON_TITLE_LIMIT,
    MAX_ROWS,
    ROW_TITLE_LIMIT,
    TEXT_ONLY_NOTE,
    Inbound,
    WhatsAppOutput,
    parse_webhook,
    reply_messages,
)

from .helpers.servers import CHANNEL_ENV, free_port
from .helpers.shopper import user_events
from .helpers.signing import signature
from .helpers.waits import wait_until

SECRET = CHANNEL_ENV["WHATSAPP_APP_SECRET"]
VERIFY_TOKEN = CHANNEL_ENV["WHATSAPP_VERIFY_TOKEN"]
PHONE_ID = CHANNEL_ENV["WHATSAPP_PHONE_NUMBER_ID"]
ACCESS_TOKEN = CHANNEL_ENV["WHATSAPP_ACCESS_TOKEN"]


def new_wa_id() -> str:
    return "31" + "".join(random.choices(string.digits, k=9))


def new_message_id() -> str:
    return f"wamid.test{uuid.uuid4().hex}"


def text_in(wa_id: str, text: str, message_id: Optional[str] = None) -> Dict[str, Any]:
    return {"from": wa_id, "id": message_id or new_message_id(), "timestamp": str(int(time.time())),
            "type": "text", "text": {"body": text}}


def reply_in(wa_id: str, kind: str, reply_id: str, title: str) -> Dict[str, Any]:
    return {"from": wa_id, "id": new_message_id(), "timestamp": str(int(time.time())), "type": "interactive",
            "interactive": {"type": kind, kind: {"id": reply_id, "title": title}}}


def messages_value(wa_id: str, *messages: Dict[str, Any], name: str = "Sam de Vries",
                   phone_number_id: str = PHONE_ID) -> Dict[str, Any]:
    return {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": list(messages)}


def statuses_value(wa_id: str) -> Dict[str, Any]:
    return {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": PHONE_ID},
            "statuses": [{"id": new_message_id(), "status": status, "timestamp": str(int(time.time())),
                          "recipient_id": wa_id} for status in ("sent", "delivered", "read")]}


def webhook(*entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    """A webhook body with one entry per argument, each a list of `messages` change values."""
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value} for value in values]}
                      for values in entries]}


def visible(body: Dict[str, Any]) -> str:
    """What the shopper reads in a message the assistant sent."""
    if body.get("type") == "text":
        return body["text"]["body"]
    if body.get("type") == "interactive":
        return body["interactive"]["body"]["text"]
    return ""


# --- reading webhook bodies -----------------------------------------------------------------


def test_text_and_tapped_choices_are_read_as_text_and_payloads():
    """A text is read as typed; a tapped button or list row as its id, which carries the payload."""
    wa = new_wa_id()
    body = webhook([messages_value(
        wa,
        text_in(wa, "  where is my order?  ", "wamid.1"),
        {**reply_in(wa, "button_reply", "/deny", "No, thanks"), "id": "wamid.2"},
        {**reply_in(wa, "list_reply", '/inform{"resolution_choice": "refund"}', "Refund"), "id": "wamid.3"},
        {"from": wa, "id": "wamid.4", "type": "button", "button": {"payload": "/affirm", "text": "Yes"}},
    )])
    found = parse_webhook(body)
    assert [(m.message_id, m.kind, m.text) for m in found] == [
        ("wamid.1", "text", "where is my order?"),
        ("wamid.2", "button_reply", "/deny"),
        ("wamid.3", "list_reply", '/inform{"resolution_choice": "refund"}'),
        ("wamid.4", "button", "/affirm"),
    ]
    assert {m.wa_id for m in found} == {wa}
    assert found[0].metadata() == {"channel": "whatsapp", "wa_id": wa, "message_id": "wamid.1", "type": "text",
                                   "profile_name": "Sam de Vries", "phone_number_id": PHONE_ID,
                                   "timestamp": body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"]}


def test_every_entry_change_and_message_of_a_batch_is_read_in_order():
    """Nothing after the first message of a batch is dropped."""
    a, b, c = new_wa_id(), new_wa_id(), new_wa_id()
    body = webhook([messages_value(a, text_in(a, "one")), messages_value(b, text_in(b, "two"))],
                   [messages_value(c, text_in(c, "three"), text_in(c, "four"))])
    assert [(m.wa_id, m.text) for m in parse_webhook(body)] == [(a, "one"), (b, "two"), (c, "three"), (c, "four")]


def test_status_callbacks_and_other_fields_give_no_message():
    """Sent/delivered/read callbacks and non-message webhook fields start nothing."""
    wa = new_wa_id()
    body = webhook([statuses_value(wa)])
    body["entry"][0]["changes"].append({"field": "message_template_status_update", "value": {"event": "APPROVED"}})
    assert parse_webhook(body) == []


def test_unreadable_types_ask_for_text_and_reactions_are_ignored():
    """A photo or a location gets the ask-for-text note; a reaction gets nothing at all."""
    wa = new_wa_id()
    body = webhook([messages_value(
        wa,
        {"from": wa, "id": "wamid.img", "type": "image", "image": {"id": "1", "mime_type": "image/jpeg"}},
        {"from": wa, "id": "wamid.loc", "type": "location", "location": {"latitude": 52.3, "longitude": 4.9}},
        {"from": wa, "id": "wamid.re", "type": "reaction", "reaction": {"message_id": "wamid.x", "emoji": "👍"}},
    )])
    assert [(m.message_id, m.text) for m in parse_webhook(body)] == [("wamid.img", None), ("wamid.loc", None)]


@pytest.mark.parametrize("body", [
    [],                                                      # not an object
    {"entry": []},                                           # no object type
    {"object": "page", "entry": []},                         # a Messenger body
    {"object": "whatsapp_business_account"},                 # no entries
    {"object": "whatsapp_business_account", "entry": {}},    # entries not a list
])
def test_bodies_of_the_wrong_shape_are_refused(body):
    """A body that is not a Cloud API webhook at all raises MalformedWebhook (the webhook's 400)."""
    with pytest.raises(MalformedWebhook):
        parse_webhook(body)


@pytest.mark.parametrize("bad, logged", [
    ("x", "entry[1] of a webhook: not an object"),
    ({"changes": {}}, "entry[1] of a webhook: changes is not a list"),
    ({"changes": ["x"]}, "entry[1].changes[0] of a webhook: not an object"),
    ({"changes": [{"field": "messages"}]}, "entry[1].changes[0] of a webhook: value is not an object"),
    ({"changes": [{"field": "messages", "value": {"messages": {}}}]}, "messages is not a list"),
    ({"changes": [{"field": "messages", "value": {"messages": ["x"]}}]}, "messages[0] of a webhook: not an object"),
    ({"changes": [{"field": "messages", "value": {"messages": [{"type": "text"}]}}]}, "no id or no sender"),
])
def test_a_malformed_part_of_a_batch_is_skipped_and_logged_and_the_rest_is_read(bad, logged, caplog):
    """One bad entry, change or message costs only itself: refusing the body would make Meta
    deliver the good messages again, with the bad one, for days, and none would be answered."""
    wa = new_wa_id()
    body = webhook([messages_value(wa, text_in(wa, "one"))], [messages_value(wa, text_in(wa, "two"))])
    body["entry"].insert(1, bad)
    caplog.set_level(logging.WARNING, logger="connectors.whatsapp")
    assert [m.text for m in parse_webhook(body)] == ["one", "two"]
    assert any(logged in r.getMessage() and r.getMessage().startswith("whatsapp: skipped") for r in caplog.records)


def test_a_message_survives_being_stored_and_read_back():
    """What is stored before Meta's 200 is enough to run the turn again after a restart."""
    wa = new_wa_id()
    [message] = parse_webhook(webhook([messages_value(wa, text_in(wa, "where is my order?"))]))
    stored = json.loads(json.dumps(message.to_json()))
    assert Inbound.from_json(stored) == message
    assert Inbound.from_json({**stored, "added_later": "ignored"}) == message
    for broken in ({"wa_id": wa}, {**stored, "text": 3}, [stored], None):
        with pytest.raises(ValueError):
            Inbound.from_json(broken)


# --- building outgoing messages -----------------------------------------------------------


def test_up_to_three_choices_are_reply_buttons_with_payload_ids():
    """Two or three choices become reply buttons; ids are the payloads, titles fit in 20 characters."""
    [message] = reply_messages("3161", "Would you like me to pass you to a colleague?", [
        {"title": "Yes, a person please", "payload": "/human_handoff"},
        {"title": "No thanks, I'd rather keep chatting", "payload": "/deny"},
    ])
    assert message["to"] == "3161" and message["type"] == "interactive"
    interactive = message["interactive"]
    assert interactive["type"] == "button"
    assert interactive["body"]["text"] == "Would you like me to pass you to a colleague?"
    replies = [b["reply"] for b in interactive["action"]["buttons"]]
    assert [r["id"] for r in replies] == ["/human_handoff", "/deny"]
    assert replies[0]["title"] == "Yes, a person please"
    assert len(replies[1]["title"]) == BUTTON_TITLE_LIMIT and replies[1]["title"].endswith("…")


def test_more_than_three_choices_are_a_list_of_at_most_ten_rows():
    """Four or more choices become a list; long titles are shortened and kept whole in the description."""
    buttons = [{"title": f"Option number {i} with a long name", "payload": f"/inform{{\"n\": {i}}}"}
               for i in range(12)]
    [message] = reply_messages("3161", "Pick one", buttons)
    interactive = message["interactive"]
    assert interactive["type"] == "list" and interactive["action"]["button"]
    rows = interactive["action"]["sections"][0]["rows"]
    assert len(rows) == MAX_ROWS
    assert [row["id"] for row in rows] == [b["payload"] for b in buttons[:MAX_ROWS]]
    assert all(len(row["title"]) <= ROW_TITLE_LIMIT for row in rows)
    assert rows[0]["description"] == "Option number 0 with a long name"


def test_awkward_buttons_still_make_a_valid_message():
    """Oversized payloads, repeated ids, link buttons and an overlong text are all handled."""
    messages = reply_messages("3161", "x" * 1500, [
        {"title": "Huge", "payload": "/inform" + "{}" * BUTTON_ID_LIMIT},  # too long to be an id: title instead
        {"title": "Track it", "url": "https://track.example/1Z999"},     # a link: goes into the text
        {"title": "Same", "payload": "/deny"},
        {"title": "Same again", "payload": "/deny"},                     # a repeated id would be refused
    ])
    *texts, buttons = messages
    assert [m["type"] for m in texts] == ["text"] and "https://track.example/1Z999" in texts[0]["text"]["body"]
    assert texts[0]["text"]["preview_url"] is True
    interactive = buttons["interactive"]
    assert interactive["body"]["text"] and len(interactive["body"]["text"]) <= 1024
    assert [b["reply"]["id"] for b in interactive["action"]["buttons"]] == ["Huge", "/deny"]


def test_link_buttons_alone_make_a_plain_text():
    """Only links: one text with the links in it, no interactive message."""
    [message] = reply_messages("3161", "Your tracking page:", [{"title": "Track", "url": "https://t.example/1"}])
    assert message["type"] == "text" and message["text"]["body"] == "Your tracking page:\nTrack: https://t.example/1"


# --- the sender against the fake Graph API --------------------------------------------------


def to_shopper(wa_id: str):
    return lambda request: request["body"].get("to") == wa_id


async def test_the_sender_posts_to_the_phone_numbers_messages_endpoint_with_the_token(fake_graph):
    """Text goes to {base}/{phone_number_id}/messages with the bearer token and messaging_product."""
    wa = new_wa_id()
    output = WhatsAppOutput("token-123", "5550001", fake_graph.url)
    try:
        await output.send_response(wa, {"text": "Your parcel is on its way."})
        await output.send_custom_json(wa, {"type": "location", "location": {"latitude": 52.37, "longitude": 4.9}})
    finally:
        await output.aclose()
    text, custom = fake_graph.received(to_shopper(wa))
    assert text["path"] == "/v21.0/5550001/messages"
    assert text["headers"]["Authorization"] == "Bearer token-123"
    assert text["body"] == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": wa,
                            "type": "text", "text": {"body": "Your parcel is on its way.", "preview_url": False}}
    assert custom["body"] == {"messaging_product": "whatsapp", "to": wa, "type": "location",
                              "location": {"latitude": 52.37, "longitude": 4.9}}


async def test_the_sender_retries_a_failed_send(fake_graph):
    """A 500 from the Graph API is retried, and the message arrives."""
    wa = new_wa_id()
    output = WhatsAppOutput("token-123", "5550001", fake_graph.url)
    fake_graph.fail_next(1)
    try:
        assert await output.post({"messaging_product": "whatsapp", "to": wa, "type": "text",
                                  "text": {"body": "again"}}) is not None
    finally:
        await output.aclose()
        fake_graph.fail_next(0)
    attempts = [r for r in fake_graph.requests if to_shopper(wa)(r)]
    assert [r["failed"] for r in attempts] == [True, False]


async def test_a_send_that_finally_fails_is_logged_not_raised(caplog):
    """With the Graph API unreachable, sending gives up after its attempts and logs why."""
    output = WhatsAppOutput("token-123", "5550001", f"http://127.0.0.1:{free_port()}/v21.0", attempts=2)
    caplog.set_level(logging.WARNING, logger="connectors.whatsapp")
    try:
        await output.send_text_message("31612345678", "Hello")
    finally:
        await output.aclose()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "could not send a text message to …5678" in errors[0]
    assert "31612345678" not in caplog.text  # phone numbers stay out of the logs


def test_the_output_is_built_from_settings_alone():
    """The agent console can write to a shopper with nothing but the settings."""
    from pathlib import Path

    from bot.config import load_settings

    settings = load_settings(environ={**CHANNEL_ENV, "WHATSAPP_API_BASE_URL": "http://graph.test/v99.0/"},
                             env_file=Path("/nonexistent"))
    output = WhatsAppOutput.from_settings(settings)
    assert output.messages_url == f"http://graph.test/v99.0/{PHONE_ID}/messages"
    assert output.access_token == ACCESS_TOKEN
    with pytest.raises(ChannelNotConfigured, match="WHATSAPP_ACCESS_TOKEN"):
        WhatsAppOutput.from_settings(load_settings(environ={}, env_file=Path("/nonexistent")))


# --- through the running assistant ----------------------------------------------------------


class Shopper:
    """One WhatsApp user writing to the shop, and what the assistant sent them."""

    def __init__(self, server: Dict[str, Any], graph: Any) -> None:
        self.server, self.graph, self.wa_id = server, graph, new_wa_id()
        self.url = f"{server['url']}/webhooks/whatsapp/webhook"

    def post(self, payload: Any, *, secret: str = SECRET) -> httpx.Response:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return httpx.post(self.url, content=raw, timeout=30,
                          headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature(raw, secret)})

    def deliver(self, *messages: Dict[str, Any], **value: Any) -> httpx.Response:
        response = self.post(webhook([messages_value(self.wa_id, *messages, **value)]))
        assert response.status_code == 200, response.text
        return response

    def say(self, text: str) -> str:
        message = text_in(self.wa_id, text)
        self.deliver(message)
        return message["id"]

    def tap(self, kind: str, reply_id: str, title: str) -> None:
        self.deliver(reply_in(self.wa_id, kind, reply_id, title))

    def sent(self) -> List[Dict[str, Any]]:
        return [r["body"] for r in self.graph.received(to_shopper(self.wa_id))]

    def texts(self) -> List[str]:
        return [visible(body) for body in self.sent()]

    def expect(self, needle: str, since: int = 0, timeout: float = 60) -> List[str]:
        """Wait for a message containing `needle` among those sent after the first `since`; returns those."""
        def found() -> Optional[List[str]]:
            new = self.texts()[since:]
            return new if any(needle in text for text in new) else None

        try:
            return wait_until(found, what=repr(needle), timeout=timeout, every=0.1)
        except AssertionError as gave_up:
            raise AssertionError(f"{gave_up}; sent since: {self.texts()[since:]}") from None

    def user_events(self) -> List[Dict[str, Any]]:
        return user_events(self.server["url"], scoped("whatsapp", self.wa_id), self.server["token"])


@pytest.fixture(scope="module")
def server(assistant):
    return assistant


@pytest.fixture
def shopper(server, fake_graph):
    return Shopper(server, fake_graph)


def test_the_channel_is_served(server):
    """The webhook's health route answers where Meta will be pointed."""
    response = httpx.get(f"{server['url']}/webhooks/whatsapp/", timeout=30)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("params, status, text", [
    ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}, 200, "1158201444"),
    ({"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1158201444"}, 403, None),
    ({"hub.mode": "subscribe", "hub.challenge": "1158201444"}, 400, None),   # no token
    ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}, 400, None),  # no challenge
    ({}, 400, None),                                                          # nothing at all
])
def test_the_verify_handshake_over_http(server, params, status, text):
    """Meta's GET check: the challenge comes back as plain text only for the right token."""
    response = httpx.get(f"{server['url']}/webhooks/whatsapp/webhook", params=params, timeout=30)
    assert response.status_code == status
    if text is not None:
        assert response.text == text and response.headers["content-type"].startswith("text/plain")
    else:
        assert "1158201444" not in response.text


def test_bad_and_missing_signatures_are_refused(shopper):
    """A body without Meta's signature, or signed with another secret, gets 403 and no answer."""
    raw = json.dumps(webhook([messages_value(shopper.wa_id, text_in(shopper.wa_id, "where is my order?"))])).encode()
    unsigned = httpx.post(shopper.url, content=raw, headers={"Content-Type": "application/json"}, timeout=30)
    forged = shopper.post(raw, secret="not-the-app-secret")
    tampered = httpx.post(shopper.url, content=raw.replace(b"where", b"WHERE"), timeout=30,
                          headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature(raw, SECRET)})
    assert [r.status_code for r in (unsigned, forged, tampered)] == [403, 403, 403]
    barrier = shopper.say("hi")  # a genuine message afterwards: its answer is the only one
    shopper.expect("order assistant")
    assert [e["message_id"] for e in shopper.user_events()] == [barrier]


def test_malformed_bodies_get_400_and_a_log_line(server, shopper):
    """Signed but not JSON, or JSON of the wrong shape: 400, logged, never a 500."""
    def refusals() -> int:
        return sum("whatsapp: refused a signed webhook" in line for line in list(server["output"]))

    before = refusals()
    assert shopper.post(b'{"object": "whatsapp_business_account", "entry": [').status_code == 400
    assert shopper.post({"object": "whatsapp_business_account", "entry": "nope"}).status_code == 400
    assert shopper.post([1, 2, 3]).status_code == 400
    wait_until(lambda: refusals() >= before + 3, what="three refusals in the log", timeout=10)


def test_a_shopper_gets_their_order_status_over_whatsapp(server, shopper):
    """Ask, give the order number, prove it with the postcode: the real status and tracking number arrive."""
    order = server["orders"]["in_transit_on_time"]
    shopper.say("where is my order?")
    shopper.expect("order number")
    since = len(shopper.texts())
    shopper.say(order["order_number"])
    shopper.expect("email address on the order, or the delivery postcode", since)
    since = len(shopper.texts())
    shopper.say(order["postcode"])
    answer = shopper.expect(order["tracking_numbers"][0], since)
    assert any("that matches" in text for text in answer)
    assert any("on its way" in text for text in answer)
    events = shopper.user_events()
    assert [e["text"] for e in events] == ["where is my order?", order["order_number"], order["postcode"]]
    assert events[0]["metadata"]["profile_name"] == "Sam de Vries"
    assert events[0]["metadata"]["wa_id"] == shopper.wa_id and events[0]["metadata"]["message_id"]


def test_a_menu_arrives_as_a_list_and_a_tapped_row_is_its_payload(shopper):
    """The greeting's four choices arrive as a list; tapping "Where is my order?" starts that job."""
    shopper.say("hi")
    shopper.expect("order assistant")
    [menu] = [body for body in shopper.sent() if body["type"] == "interactive"]
    assert menu["interactive"]["type"] == "list"
    rows = menu["interactive"]["action"]["sections"][0]["rows"]
    assert ("/order_status", "Where is my order?") in [(row["id"], row["title"]) for row in rows]
    since = len(shopper.texts())
    shopper.tap("list_reply", "/order_status", "Where is my order?")
    shopper.expect("What's your order number?", since)
    assert shopper.user_events()[-1]["parse_data"]["intent"]["name"] == "order_status"


def test_an_offer_arrives_as_buttons_and_a_tapped_button_is_its_payload(server, shopper):
    """A delivered order's address cannot change: the offer of a person comes with two reply
    buttons, and tapping "No" is read as its payload, /deny."""
    order = server["orders"]["delivered"]
    shopper.say("change my delivery address")
    shopper.expect("order number")
    since = len(shopper.texts())
    shopper.say(order["order_number"])
    shopper.expect("delivery postcode", since)
    since = len(shopper.texts())
    shopper.say(order["postcode"])
    shopper.expect("pass you to a colleague", since)
    [offer] = [body for body in shopper.sent()[since:] if body.get("interactive", {}).get("type") == "button"]
    buttons = [b["reply"] for b in offer["interactive"]["action"]["buttons"]]
    assert [b["id"] for b in buttons] == ["/human_handoff", "/deny"]
    assert all(len(b["title"]) <= BUTTON_TITLE_LIMIT for b in buttons)
    since = len(shopper.texts())
    shopper.tap("button_reply", "/deny", buttons[1]["title"])
    shopper.expect("Anything else I can help with?", since)
    assert shopper.user_events()[-1]["parse_data"]["intent"]["name"] == "deny"


def test_a_duplicate_delivery_is_handled_once(shopper):
    """Meta delivering the same message twice gives one turn and one answer."""
    message = text_in(shopper.wa_id, "where is my order?")
    shopper.deliver(message)
    shopper.deliver(message)
    shopper.expect("order number")
    since = len(shopper.texts())
    shopper.say(shopper.server["orders"]["delivered"]["order_number"])  # the conversation goes on
    shopper.expect("delivery postcode", since)
    assert sum("What's your order number?" in text for text in shopper.texts()) == 1
    assert [e["message_id"] for e in shopper.user_events()].count(message["id"]) == 1
    receipts = shopper.graph.received(lambda r: r["body"].get("message_id") == message["id"])
    assert len(receipts) == 1 and receipts[0]["body"]["status"] == "read"


def test_status_callbacks_send_nothing(shopper):
    """Sent/delivered/read callbacks are acknowledged and start no turn."""
    response = shopper.post(webhook([statuses_value(shopper.wa_id)]))
    assert response.status_code == 200
    barrier = shopper.say("hi")
    shopper.expect("order assistant")
    assert [e["message_id"] for e in shopper.user_events()] == [barrier]
    assert all("order assistant" in text for text in shopper.texts())


def test_a_photo_gets_a_polite_note_and_no_turn(shopper):
    """A photo is answered with a request for text; a reaction with nothing; neither reaches the bot."""
    shopper.deliver(
        {"from": shopper.wa_id, "id": new_message_id(), "type": "reaction",
         "reaction": {"message_id": new_message_id(), "emoji": "👍"}},
        {"from": shopper.wa_id, "id": new_message_id(), "type": "image",
         "image": {"id": "27681414235104944", "mime_type": "image/jpeg"}},
    )
    shopper.expect(TEXT_ONLY_NOTE)
    assert shopper.texts() == [TEXT_ONLY_NOTE]
    assert shopper.user_events() == []


def test_every_message_of_a_batch_is_answered(server, fake_graph):
    """Three shoppers in one webhook call, one of them with two messages: all answered, in order."""
    a, b, c = (Shopper(server, fake_graph) for _ in range(3))
    order = server["orders"]["delivered"]
    body = webhook([messages_value(a.wa_id, text_in(a.wa_id, "hi")),
                    messages_value(b.wa_id, text_in(b.wa_id, "where is my order?"))],
                   [messages_value(c.wa_id, text_in(c.wa_id, "where is my order?"),
                                   text_in(c.wa_id, order["order_number"]))])
    assert a.post(body).status_code == 200
    a.expect("order assistant")
    b.expect("What's your order number?")
    c.expect("delivery postcode")
    assert [e["text"] for e in c.user_events()] == ["where is my order?", order["order_number"]]


def test_a_message_for_another_number_is_not_answered(shopper):
    """Only the configured business number is served: answers could not go out from another."""
    stray = text_in(shopper.wa_id, "hi")
    shopper.deliver(stray, phone_number_id="999999999")
    barrier = shopper.say("hi")
    shopper.expect("order assistant")
    assert [e["message_id"] for e in shopper.user_events()] == [barrier]


def test_the_webhook_answers_before_the_turn_is_done(shopper):
    """The 200 comes back before the assistant's answer has been sent: Meta is never kept waiting."""
    response = shopper.deliver(text_in(shopper.wa_id, "where is my order?"))
    assert response.status_code == 200 and shopper.sent() == []
    shopper.expect("What's your order number?")


def test_an_answer_survives_a_failing_graph_api(shopper, fake_graph):
    """The Graph API failing (500) is retried, and the shopper still gets the answer."""
    # Two failures: the best-effort read receipt is tried once, the answer until it arrives,
    # so whichever goes first, the answer meets at least one failure.
    fake_graph.fail_next(2)
    try:
        shopper.say("where is my order?")
        shopper.expect("What's your order number?")
    finally:
        fake_graph.fail_next(0)
    attempts = [r for r in fake_graph.requests if to_shopper(shopper.wa_id)(r)]
    failed = [r["body"] for r in attempts if r["failed"]]
    assert failed and all(body in shopper.sent() for body in failed)


def test_a_batch_with_a_malformed_message_is_answered_for_the_good_ones(server, fake_graph):
    """One message without id or sender between two good ones: 200, both good ones answered, the bad
    one skipped with a log line.  A 400 would make Meta deliver all three again, for days."""
    a, b = Shopper(server, fake_graph), Shopper(server, fake_graph)

    def skipped() -> int:
        return sum("whatsapp: skipped entry[0].changes[0].value.messages[1] of a webhook: no id or no sender" in line
                   for line in list(server["output"]))

    before = skipped()
    value = messages_value(a.wa_id, text_in(a.wa_id, "hi"), {"type": "text", "text": {"body": "hi"}},
                           text_in(b.wa_id, "where is my order?"))
    assert a.post(webhook([value])).status_code == 200
    a.expect("order assistant")
    b.expect("What's your order number?")
    wait_until(lambda: skipped() > before, what="the skipped message's log line", timeout=10)
