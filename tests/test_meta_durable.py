"""A message Meta has its 200 for is answered once, whatever happens to the process (finding 7).

Meta sends a WhatsApp or Messenger message again only while it has not seen a
200, so from the 200 on the message is ours to keep: it is stored before the
answer (or the answer is a 503 and Meta tries again), marked handled only after
its turn ran, run at start-up when a restart or a crash left it unhandled (by
one process, even with two starting at once), and a stopping server answers
new webhooks with 503 and finishes its running turns while the action server
is still there.

The first half drives the channel class in this process against a real store
(SQLite and PostgreSQL), with a turn handler the test controls; the second half
is black-box: its own `python -m bot run` (and two Rasa replicas) on the fake
Graph API, signed webhooks over HTTP, a SIGTERM in the middle of a turn and a
restart on the same store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Tuple

import httpx
import pytest
from sanic import Sanic
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from bot.domain.clock import utcnow
from bot.store import db
from bot.store.models import ChannelDelivery
from connectors import messenger, whatsapp
from connectors.meta import MetaWebhookInput
from connectors.whatsapp import WhatsAppInput, WhatsAppOutput

from .conftest import ACTION_TOKEN, _Databases
from .helpers.servers import CHANNEL_ENV, MODEL, ROOT, Server, free_port
from .helpers.signing import signature
from .helpers.waits import wait_for, wait_until

WA_SECRET = CHANNEL_ENV["WHATSAPP_APP_SECRET"]
FB_SECRET = CHANNEL_ENV["MESSENGER_APP_SECRET"]
PHONE_ID = CHANNEL_ENV["WHATSAPP_PHONE_NUMBER_ID"]
WA_WEBHOOK = "/webhooks/whatsapp/webhook"
FB_WEBHOOK = "/webhooks/messenger/webhook"
GREETING = "order assistant"
ASK_NUMBER = "What's your order number?"
VERIFIED = "Thanks, that matches."
TURN_S = 90.0


# --- webhook bodies ------------------------------------------------------------------------


def new_wa_id() -> str:
    return "31" + str(uuid.uuid4().int)[:9]


def new_psid() -> str:
    return str(uuid.uuid4().int)[:16]


def wa_message(wa_id: str, text: str, message_id: Optional[str] = None) -> Dict[str, Any]:
    return {"from": wa_id, "id": message_id or f"wamid.durable{uuid.uuid4().hex}", "timestamp": str(int(time.time())),
            "type": "text", "text": {"body": text}}


def wa_webhook(*messages: Dict[str, Any], statuses: bool = False) -> Dict[str, Any]:
    value: Dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": "15550001234", "phone_number_id": PHONE_ID}}
    if statuses:
        value["statuses"] = [{"id": "wamid.status", "status": "delivered", "timestamp": str(int(time.time())),
                              "recipient_id": "31600000000"}]
    else:
        value["contacts"] = [{"profile": {"name": "Sam"}, "wa_id": m["from"]} for m in messages]
        value["messages"] = list(messages)
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]}


def post(url: str, payload: Any, secret: str = WA_SECRET, path: str = WA_WEBHOOK,
         timeout: float = 30) -> httpx.Response:
    raw = json.dumps(payload).encode()
    return httpx.post(url + path, content=raw, timeout=timeout,
                      headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature(raw, secret)})


def visible(body: Dict[str, Any]) -> str:
    """What a shopper reads in a WhatsApp message or a Messenger message the assistant sent."""
    if body.get("type") == "text":
        return body["text"]["body"]
    if body.get("type") == "interactive":
        return body["interactive"]["body"]["text"]
    return str(body.get("message", {}).get("text") or "")


def to_wa(wa_id: str) -> Callable[[Dict[str, Any]], bool]:
    return lambda request: request["body"].get("to") == wa_id


def to_psid(psid: str) -> Callable[[Dict[str, Any]], bool]:
    return lambda request: (request["path"].split("?")[0].endswith("/me/messages")
                            and request["body"].get("recipient", {}).get("id") == psid and "message" in request["body"])


def texts_to(graph: Any, where: Callable[[Dict[str, Any]], bool]) -> List[str]:
    return [visible(r["body"]) for r in graph.received(where)]


def count(graph: Any, where: Callable[[Dict[str, Any]], bool], needle: str) -> int:
    return sum(needle in text for text in texts_to(graph, where))


# --- the store -----------------------------------------------------------------------------


def rows(engine: Engine, channel: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """message id -> the row's payload, claim and handled time."""
    with db.session_scope(engine) as session:
        query = select(ChannelDelivery)
        if channel:
            query = query.where(ChannelDelivery.channel == channel)
        return {row.message_id: {"payload": row.payload, "claimed_at": row.claimed_at, "handled_at": row.handled_at,
                                 "received_at": row.received_at}
                for row in session.execute(query).scalars()}


def leave(engine: Engine, channel: str, delivery: Any, *, claimed_at: Optional[dt.datetime] = None,
          received_at: Optional[dt.datetime] = None) -> None:
    """Store `delivery` as accepted and never handled, as a restart or a crash leaves it."""
    with db.session_scope(engine) as session:
        session.add(ChannelDelivery(channel=channel, message_id=delivery.delivery_id,
                                    received_at=received_at or utcnow(), payload=dataclasses.asdict(delivery),
                                    claimed_at=claimed_at, handled_at=None))


def unhandled(engine: Engine) -> List[str]:
    return [message_id for message_id, row in rows(engine).items() if row["handled_at"] is None]


def wa_inbound(wa_id: str, text: str, message_id: Optional[str] = None) -> whatsapp.Inbound:
    return whatsapp.Inbound(message_id=message_id or f"wamid.left{uuid.uuid4().hex}", wa_id=wa_id, text=text,
                            kind="text", phone_number_id=PHONE_ID)


def fb_inbound(psid: str, text: str) -> messenger.Inbound:
    mid = f"m_left{uuid.uuid4().hex}"
    return messenger.Inbound(sender_id=psid, text=text, kind="text", delivery_id=mid, message_id=mid, page_id="1")


# --- the channel in this process ------------------------------------------------------------


class Turns:
    """The turn handler Rasa would be: records each message, and holds or fails the ones it is told to."""

    def __init__(self) -> None:
        self.started: List[Tuple[str, str]] = []
        self.finished: List[Tuple[str, str]] = []
        self.gates: Dict[str, asyncio.Event] = {}
        self.failing: set = set()

    def gate(self, text: str) -> asyncio.Event:
        self.gates[text] = asyncio.Event()
        return self.gates[text]

    async def __call__(self, message: Any) -> None:
        self.started.append((message.sender_id, message.text))
        if message.text in self.gates:
            await self.gates[message.text].wait()
        if message.text in self.failing:
            raise RuntimeError(f"the turn for {message.text!r} failed")
        self.finished.append((message.sender_id, message.text))


def wa_channel(engine: Engine, graph: Any, **options: Any) -> WhatsAppInput:
    return WhatsAppInput("verify", WA_SECRET, WhatsAppOutput("token", PHONE_ID, graph.url), engine=engine, **options)


@contextlib.asynccontextmanager
async def served(channel: MetaWebhookInput, turns: Turns) -> AsyncIterator[str]:
    """The channel's blueprint in a Sanic server of its own, started and stopped with its listeners."""
    app = Sanic(f"durable_{uuid.uuid4().hex[:8]}")
    app.config.ACCESS_LOG = False
    app.blueprint(channel.blueprint(turns), url_prefix=f"/webhooks/{channel.name()}")
    port = free_port()
    server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True)
    # Sanic rewrites some of its own methods when an app starts ("touch-up"), and cannot do it twice
    # in one process unless in test mode, where it keeps the originals: each test here starts an app.
    Sanic.test_mode = True
    try:
        await server.startup()
    finally:
        Sanic.test_mode = False
    await server.before_start()
    await server.after_start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for gate in turns.gates.values():
            gate.set()
        if not channel.draining:
            await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()


async def apost(url: str, payload: Any) -> httpx.Response:
    raw = json.dumps(payload).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(url + WA_WEBHOOK, content=raw, timeout=30,
                                 headers={"X-Hub-Signature-256": signature(raw, WA_SECRET)})


async def test_a_message_is_stored_before_the_200_and_marked_handled_only_after_its_turn(engine, fake_graph):
    """When Meta has its 200 the message is in the store with what its turn needs, claimed and not
    handled; handled once the turn ran, and then the shopper's words are not kept any more."""
    channel, turns = wa_channel(engine, fake_graph), Turns()
    release = turns.gate("where is my order?")
    wa_id = new_wa_id()
    message = wa_message(wa_id, "where is my order?")
    async with served(channel, turns) as url:
        assert (await apost(url, wa_webhook(message))).status_code == 200
        stored = rows(engine)[message["id"]]
        assert stored["payload"] == {"message_id": message["id"], "wa_id": wa_id, "text": "where is my order?",
                                     "kind": "text", "profile_name": "Sam", "phone_number_id": PHONE_ID,
                                     "timestamp": message["timestamp"]}
        assert stored["claimed_at"] is not None and stored["handled_at"] is None
        await wait_for(lambda: turns.started, what="the turn to start", timeout=10)
        await asyncio.sleep(0.2)
        assert rows(engine)[message["id"]]["handled_at"] is None  # running is not handled
        release.set()
        await wait_for(lambda: rows(engine)[message["id"]]["handled_at"], what="the message marked handled",
                       timeout=10)
        assert rows(engine)[message["id"]]["payload"] is None
        assert turns.finished == [(f"whatsapp:{wa_id}", "where is my order?")]


async def test_a_store_that_cannot_be_written_gets_503_and_no_turn(tmp_path, fake_graph):
    """Without the message stored, a 200 would lose it for good: the answer is a 503, and Meta tries again."""
    broken = db.make_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}")  # no channel_deliveries table
    channel, turns = wa_channel(broken, fake_graph), Turns()
    try:
        async with served(channel, turns) as url:
            answer = await apost(url, wa_webhook(wa_message(new_wa_id(), "hi")))
            assert answer.status_code == 503
            await asyncio.sleep(0.3)
            assert turns.started == []
    finally:
        broken.dispose()


async def test_a_turn_that_fails_is_marked_handled_and_not_run_again(engine, fake_graph):
    """A turn that raises is logged and marked handled: a message that always fails must not loop."""
    channel, turns = wa_channel(engine, fake_graph), Turns()
    turns.failing.add("boom")
    wa_id = new_wa_id()
    failing, after = wa_message(wa_id, "boom"), wa_message(wa_id, "hi")
    async with served(channel, turns) as url:
        assert (await apost(url, wa_webhook(failing, after))).status_code == 200
        await wait_for(lambda: not unhandled(engine), what="both messages handled", timeout=10)
        assert await channel.sweep() == 0
        assert [text for _, text in turns.started] == ["boom", "hi"]
        assert [text for _, text in turns.finished] == ["hi"]


async def test_two_processes_starting_at_once_run_each_left_message_once(engine, fake_graph):
    """Three channels, as three replicas starting at once, claim the messages left unhandled: each runs
    exactly once, in received order per shopper; a message a live process holds, or one already handled,
    runs nowhere."""
    now = utcnow()
    shoppers = [new_wa_id() for _ in range(5)]
    left = []
    for n in range(4):
        for wa_id in shoppers:
            delivery = wa_inbound(wa_id, f"message {n}")
            leave(engine, "whatsapp", delivery, received_at=now - dt.timedelta(minutes=10) + dt.timedelta(seconds=n))
            left.append(delivery)
    crashed = wa_inbound(new_wa_id(), "left by a crashed replica")
    leave(engine, "whatsapp", crashed, claimed_at=now - dt.timedelta(minutes=5))
    live = wa_inbound(new_wa_id(), "held by a live replica")
    leave(engine, "whatsapp", live, claimed_at=now)
    done = wa_inbound(new_wa_id(), "handled long ago")
    leave(engine, "whatsapp", done)
    with db.session_scope(engine) as session:
        session.execute(update(ChannelDelivery).where(ChannelDelivery.message_id == done.message_id)
                        .values(handled_at=now))
    elsewhere = fb_inbound(new_psid(), "another channel's")
    leave(engine, "messenger", elsewhere)

    url = engine.url.render_as_string(hide_password=False)
    engines = [db.make_engine(url) for _ in range(3)]  # one connection pool each, as separate processes
    replicas = [(wa_channel(e, fake_graph), Turns()) for e in engines]
    try:
        for channel, turns in replicas:
            channel.blueprint(turns)
        claimed = await asyncio.gather(*(channel.sweep() for channel, _ in replicas))
        assert sum(claimed) == len(left) + 1
        expected = {(f"whatsapp:{d.wa_id}", d.text) for d in [*left, crashed]}
        await wait_for(lambda: sum(len(turns.finished) for _, turns in replicas) >= len(expected),
                       what="every left message run", timeout=30)
        for channel, _ in replicas:
            await channel.drain(timeout=10)
        ran = [item for _, turns in replicas for item in turns.started]
        assert sorted(ran) == sorted(expected)  # each once, and nothing else
        for _, turns in replicas:
            for wa_id in shoppers:
                mine = [text for sender, text in turns.started if sender == f"whatsapp:{wa_id}"]
                assert mine == sorted(mine)  # received order
        stored = rows(engine, "whatsapp")
        assert all(stored[d.message_id]["handled_at"] for d in [*left, crashed])
        assert stored[live.message_id]["handled_at"] is None and stored[live.message_id]["claimed_at"] == now
        assert sorted(unhandled(engine)) == sorted([live.message_id, elsewhere.delivery_id])
    finally:
        for channel, _ in replicas:
            await channel.aclose()
        for e in engines:
            e.dispose()


async def test_a_live_process_keeps_its_claim_and_a_dead_ones_message_is_run_by_another(engine, fake_graph):
    """A turn longer than the lease is not run a second time while its process lives (it renews its
    claim); once that process is gone, another one runs the message after the lease."""
    lease = dt.timedelta(seconds=1)
    first, first_turns = wa_channel(engine, fake_graph, lease=lease, sweep_interval=0.2), Turns()
    second, second_turns = wa_channel(engine, fake_graph, lease=lease, sweep_interval=0.2), Turns()
    delivery = wa_inbound(new_wa_id(), "a slow one")
    first_turns.gate("a slow one")
    leave(engine, "whatsapp", delivery)
    first.blueprint(first_turns)
    second.blueprint(second_turns)
    first.start()
    await wait_for(lambda: first_turns.started, what="the first process to run the message", timeout=10)
    second.start()
    await asyncio.sleep(3 * lease.total_seconds())  # three leases: a claim not renewed would have lapsed
    assert second_turns.started == []
    # The first process dies: no more renewals, its turn never ends.
    assert first._sweeper is not None
    first._sweeper.cancel()
    for task in list(first._tasks):
        task.cancel()
    await wait_for(lambda: second_turns.finished, what="the second process to take the message over", timeout=10)
    await wait_for(lambda: not unhandled(engine), what="the message marked handled", timeout=10)
    await second.drain(timeout=5)
    await first.aclose()
    await second.aclose()
    assert second_turns.finished == [(f"whatsapp:{delivery.wa_id}", "a slow one")]


async def test_a_stopping_server_answers_503_and_finishes_the_running_turn(engine, fake_graph):
    """While draining, a new webhook gets 503 (Meta delivers it again later); the running turn
    finishes and is marked handled before the server goes."""
    channel, turns = wa_channel(engine, fake_graph, drain_timeout=10), Turns()
    release = turns.gate("slow")
    slow = wa_message(new_wa_id(), "slow")
    async with served(channel, turns) as url:
        assert (await apost(url, wa_webhook(slow))).status_code == 200
        await wait_for(lambda: turns.started, what="the turn to start", timeout=10)
        draining = asyncio.create_task(channel.drain())
        await asyncio.sleep(0.1)
        late = wa_message(new_wa_id(), "hi")
        assert (await apost(url, wa_webhook(late))).status_code == 503
        assert (await apost(url, wa_webhook(statuses=True))).status_code == 503
        assert not draining.done()
        release.set()
        await asyncio.wait_for(draining, timeout=5)
        assert rows(engine)[slow["id"]]["handled_at"] is not None
        assert late["id"] not in rows(engine)
        assert [text for _, text in turns.finished] == ["slow"]


async def test_messages_not_started_when_the_drain_ends_are_given_back_to_the_next_start(engine, fake_graph):
    """A turn still running when the drain time is up keeps its claim; the shopper's next message,
    never started, is given back at once and run by the next process (not the cut-off one twice)."""
    channel, turns = wa_channel(engine, fake_graph, drain_timeout=0.5), Turns()
    turns.gate("stuck")
    wa_id = new_wa_id()
    stuck, waiting = wa_message(wa_id, "stuck"), wa_message(wa_id, "waiting")
    async with served(channel, turns) as url:
        assert (await apost(url, wa_webhook(stuck, waiting))).status_code == 200
        await wait_for(lambda: turns.started, what="the first turn to start", timeout=10)
        await channel.drain()
        stored = rows(engine)
        assert stored[waiting["id"]]["claimed_at"] is None and stored[waiting["id"]]["handled_at"] is None
        assert stored[stuck["id"]]["claimed_at"] is not None and stored[stuck["id"]]["handled_at"] is None
    next_start, next_turns = wa_channel(engine, fake_graph), Turns()
    next_start.blueprint(next_turns)
    assert await next_start.sweep() == 1
    await wait_for(lambda: next_turns.finished, what="the given-back message to run", timeout=10)
    await next_start.drain(timeout=5)
    await next_start.aclose()
    assert next_turns.finished == [(f"whatsapp:{wa_id}", "waiting")]
    assert turns.started == [(f"whatsapp:{wa_id}", "stuck")]


# --- a real assistant of its own, restarted on the same store ---------------------------------


class Assistant:
    """`python -m bot run` with both Meta channels on the fake Graph API, a file store and a SQL tracker
    store (so conversations outlive a restart)."""

    def __init__(self, tmp: Path, graph: Any) -> None:
        endpoints = tmp / "endpoints.yml"
        endpoints.write_text("action_endpoint:\n  url: ${ACTION_ENDPOINT_URL}\n"
                             "  headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}\n"
                             f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tmp / 'tracker.db'}\n")
        self.store = tmp / "store.db"
        self.env = {**os.environ, **CHANNEL_ENV, "DATABASE_URL": f"sqlite:///{self.store}",
                    "RASA_PORT": str(free_port()), "ACTION_PORT": str(free_port()), "CONSOLE_PORT": str(free_port()),
                    "RASA_AUTH_TOKEN": "durable-token", "ACTION_SERVER_TOKEN": ACTION_TOKEN,
                    "RASA_ENDPOINTS": str(endpoints), "WHATSAPP_API_BASE_URL": graph.url,
                    "MESSENGER_API_BASE_URL": graph.url}
        self.url = f"http://127.0.0.1:{self.env['RASA_PORT']}"
        subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=self.env, check=True,
                       capture_output=True)
        listed = subprocess.run([sys.executable, "-m", "bot", "demo-orders", "--json"], cwd=ROOT, env=self.env,
                                check=True, capture_output=True, text=True)
        self.orders = {row["scenario"]: row for row in json.loads(listed.stdout)}
        self.engine = db.make_engine(self.env["DATABASE_URL"])
        self.server = Server(env=self.env)

    def lines(self, *parts: str) -> int:
        return sum(all(part in line for part in parts) for line in list(self.server.output))


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, fake_graph: Any) -> Iterator[Dict[str, Any]]:
    """The assistant, started once with messages left in its store by an earlier run."""
    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    bot = Assistant(tmp_path_factory.mktemp("durable"), fake_graph)
    now = utcnow()
    left = {"free": wa_inbound(new_wa_id(), "hi"),
            # As a replica killed with SIGKILL leaves it: claimed minutes ago, never handled.
            "killed": wa_inbound(new_wa_id(), "hi"),
            "messenger": fb_inbound(new_psid(), "hi")}
    leave(bot.engine, "whatsapp", left["free"], received_at=now - dt.timedelta(minutes=3))
    leave(bot.engine, "whatsapp", left["killed"], claimed_at=now - dt.timedelta(minutes=5),
          received_at=now - dt.timedelta(minutes=5))
    leave(bot.engine, "messenger", left["messenger"], received_at=now - dt.timedelta(minutes=2))
    try:
        bot.server.start()
        yield {"bot": bot, "left": left}
    finally:
        bot.server.stop()
        bot.engine.dispose()


def test_messages_left_unhandled_are_answered_once_after_start_up(own, fake_graph):
    """Messages a restart (or a killed process) left accepted but unhandled are answered when the server
    starts, on both channels, each once."""
    bot, left = own["bot"], own["left"]
    wait_until(lambda: not unhandled(bot.engine), what="the left messages handled", timeout=TURN_S, every=0.2)
    for key in ("free", "killed"):
        wa_id = left[key].wa_id
        assert count(fake_graph, to_wa(wa_id), GREETING) == 1, texts_to(fake_graph, to_wa(wa_id))
        receipts = fake_graph.received(lambda r, m=left[key].message_id: r["body"].get("message_id") == m)
        assert len(receipts) == 1  # one turn ran: one read receipt
    psid = left["messenger"].sender_id
    assert count(fake_graph, to_psid(psid), GREETING) == 1, texts_to(fake_graph, to_psid(psid))


def test_a_store_that_cannot_be_written_is_answered_503_and_the_retry_once(own, fake_graph):
    """With the store locked, the webhook is not acknowledged (503); Meta's retry is answered, once."""
    bot = own["bot"]
    wa_id = new_wa_id()
    body = wa_webhook(wa_message(wa_id, "hi"))
    lock = sqlite3.connect(bot.store, timeout=10, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        refused = post(bot.url, body)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert refused.status_code == 503, refused.text
    assert post(bot.url, body).status_code == 200
    wait_until(lambda: count(fake_graph, to_wa(wa_id), GREETING), what="the greeting", timeout=TURN_S)
    assert post(bot.url, body).status_code == 200  # and again: known, not answered again
    marker = new_wa_id()  # a later shopper's answer: turns before it are done
    assert post(bot.url, wa_webhook(wa_message(marker, "hi"))).status_code == 200
    wait_until(lambda: count(fake_graph, to_wa(marker), GREETING), what="the marker's greeting", timeout=TURN_S)
    wait_until(lambda: not unhandled(bot.engine), what="every message handled", timeout=TURN_S)
    assert count(fake_graph, to_wa(wa_id), GREETING) == 1


def test_sigterm_in_the_middle_of_a_whatsapp_turn_still_answers_it_once(own, fake_graph):
    """SIGTERM while a turn waits for the Graph API: the Rasa server stops first, refuses new webhooks
    with 503 and finishes the turn, whose next step still reaches the action server; after a restart on
    the same store the shopper has had each answer exactly once, and the refused message is answered
    when Meta delivers it again."""
    bot = own["bot"]
    order = bot.orders["in_transit_on_time"]
    tracking = order["tracking_numbers"][0]
    shopper, other = new_wa_id(), new_wa_id()
    for text, answer in (("where is my order?", ASK_NUMBER), (order["order_number"], "postcode")):
        assert post(bot.url, wa_webhook(wa_message(shopper, text))).status_code == 200
        wait_until(lambda a=answer: count(fake_graph, to_wa(shopper), a), what=repr(answer), timeout=TURN_S)

    # The postcode's turn: the form checks it on the action server and says "Thanks, that matches."
    # (held 5 s by the Graph API), then action_continue_job, on the action server again, gives the status.
    arrived = fake_graph.hold(lambda r: r["body"].get("to") == shopper and VERIFIED in visible(r["body"]),
                              seconds=5)
    assert post(bot.url, wa_webhook(wa_message(shopper, order["postcode"]))).status_code == 200
    assert arrived.wait(TURN_S), f"the turn never sent {VERIFIED!r}: {texts_to(fake_graph, to_wa(shopper))}"
    assert bot.server.process is not None
    bot.server.process.send_signal(signal.SIGTERM)

    # Draining: a webhook is refused with 503 (a body with status callbacks only probes it).
    deadline = time.monotonic() + 4
    while post(bot.url, wa_webhook(statuses=True), timeout=5).status_code == 200:
        assert time.monotonic() < deadline, "the webhook never answered 503 while the server stopped"
        time.sleep(0.05)
    refused = wa_webhook(wa_message(other, "hi"))
    assert post(bot.url, refused, timeout=5).status_code == 503
    assert bot.server.process.wait(timeout=90) == 0
    assert count(fake_graph, to_wa(shopper), tracking) == 1, texts_to(fake_graph, to_wa(shopper))

    bot.server.start()
    assert post(bot.url, refused).status_code == 200  # Meta delivers it again
    wait_until(lambda: count(fake_graph, to_wa(other), GREETING), what="the refused message's answer",
               timeout=TURN_S)
    # The marker: the shopper writes again; their messages run in order, so anything repeated
    # from before the restart would have come before this answer.
    assert post(bot.url, wa_webhook(wa_message(shopper, "hi"))).status_code == 200
    wait_until(lambda: count(fake_graph, to_wa(shopper), GREETING), what="the marker's answer", timeout=TURN_S)
    said = texts_to(fake_graph, to_wa(shopper))
    assert count(fake_graph, to_wa(shopper), VERIFIED) == 1, said
    assert count(fake_graph, to_wa(shopper), tracking) == 1, said
    assert count(fake_graph, to_wa(other), GREETING) == 1
    wait_until(lambda: not unhandled(bot.engine), what="every message handled", timeout=TURN_S)


# --- two Rasa replicas starting at once -----------------------------------------------------


def test_two_replicas_starting_at_once_answer_a_left_message_once(tmp_path, fake_graph):
    """Two Rasa servers on one PostgreSQL store start side by side with messages left unhandled:
    every message is answered, and none by both."""
    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    databases = _Databases("postgresql", tmp_path)
    servers: List[Server] = []
    engine: Optional[Engine] = None
    try:
        store = databases.new_url()
        action_port = free_port()
        (tmp_path / "endpoints.yml").write_text(
            "action_endpoint:\n  url: ${ACTION_ENDPOINT_URL}\n"
            "  headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}\n")
        (tmp_path / "credentials.yml").write_text("connectors.whatsapp.WhatsAppInput:\n"
                                                  "connectors.messenger.MessengerInput:\n")
        env = {**os.environ, **CHANNEL_ENV, "DATABASE_URL": store, "RASA_AUTH_TOKEN": "replica-token",
               "ACTION_SERVER_TOKEN": ACTION_TOKEN, "ACTION_ENDPOINT_URL": f"http://127.0.0.1:{action_port}/webhook",
               "WHATSAPP_API_BASE_URL": fake_graph.url, "MESSENGER_API_BASE_URL": fake_graph.url,
               "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "PYTHONUNBUFFERED": "1", "RASA_TELEMETRY_ENABLED": "false"}
        subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=env, check=True, capture_output=True)
        engine = db.make_engine(store)
        wa_left = [wa_inbound(new_wa_id(), "hi") for _ in range(4)]
        fb_left = [fb_inbound(new_psid(), "hi") for _ in range(2)]
        for delivery in wa_left:
            leave(engine, "whatsapp", delivery)
        for event in fb_left:
            leave(engine, "messenger", event)

        def ready(url: str) -> Callable[[], bool]:
            def check() -> bool:
                try:
                    status = httpx.get(f"{url}/status", params={"token": "replica-token"}, timeout=2)
                except httpx.HTTPError:
                    return False
                return status.status_code == 200 and bool(status.json().get("model_file"))
            return check

        def health() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{action_port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        servers.append(Server([sys.executable, "-m", "bot.serving.action_server"],
                              env={**env, "ACTION_PORT": str(action_port)}, name="the action server",
                              ready=health, own_session=True).launch())
        for name in ("A", "B"):
            port = free_port()
            servers.append(Server([sys.executable, "-m", "bot.serving.rasa_server", "run", "--model", str(MODEL),
                                   "--enable-api", "--endpoints", str(tmp_path / "endpoints.yml"),
                                   "--credentials", str(tmp_path / "credentials.yml"), "--interface", "127.0.0.1",
                                   "--port", str(port)], env=env, name=f"Rasa replica {name}",
                                  ready=ready(f"http://127.0.0.1:{port}"), own_session=True).launch())
        deadline = time.monotonic() + 300
        for server in servers:
            server.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        assert engine is not None
        wait_until(lambda: not unhandled(engine), what="every left message handled", timeout=TURN_S, every=0.2)
        for delivery in wa_left:
            assert count(fake_graph, to_wa(delivery.wa_id), GREETING) == 1, texts_to(fake_graph, to_wa(delivery.wa_id))
            assert len(fake_graph.received(lambda r, m=delivery.message_id: r["body"].get("message_id") == m)) == 1
        for event in fb_left:
            assert count(fake_graph, to_psid(event.sender_id), GREETING) == 1
    finally:
        for server in reversed(servers):
            server.stop(timeout=60)
        if engine is not None:
            engine.dispose()
        databases.drop_all()
