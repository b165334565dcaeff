"""The same code scaled out: two Rasa replicas and an action server on PostgreSQL, Redis and RabbitMQ.

One action server and two Rasa servers run on free ports and share one
endpoints file: the conversations in a PostgreSQL tracker store, Redis as
the lock store, RabbitMQ as the event broker, the shop's orders in a
PostgreSQL store.  A shopper's messages go to either replica, as a load
balancer would send them.  Both replicas open the site widget's channel
with its socket.io rooms shared through the same Redis.

The lock store is the project's ``bot.serving.lock_store.AtomicRedisLockStore``, not
Rasa's ``type: redis``: Rasa's reads a conversation's lock, changes it and
writes it back in separate steps, so two replicas taking the lock at the same
moment can both get it (the contention test below fails with it).

The engines are the ones named by TEST_POSTGRES_URL, TEST_REDIS_URL and
TEST_RABBITMQ_URL (defaults: the local servers).  Each run makes its own
databases, lock-key prefix, widget pub/sub channel, queue and exchange, and
removes them afterwards (a pub/sub channel leaves nothing behind).
An engine that cannot be reached fails the run with its name: scaling out is
a promise, so it is checked wherever the suite runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from bot.console.rasa import RasaClient
from connectors.widget import new_session_id
from tools.engines import ENDPOINTS  # the endpoints file README shows for every replica

from .conftest import ACTION_TOKEN, _Databases, load_settings_env, pg_admin_url
from .helpers.servers import MODEL, ROOT, Server, free_port
from .helpers.shopper import rest_messages_async
from .helpers.waits import wait_for
from .test_console import BACK_WITH_BOT
from .test_widget import Shopper

#: Every test here runs two Rasa replicas and an action server.
pytestmark = pytest.mark.slow

TOKEN = "scaled-out-token"
FEED_SECRET = "scaled-out-feed-secret-0123456789abcdef"
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
REPLY_TIMEOUT_S = 60.0
DEFAULT_REDIS = "redis://127.0.0.1:6379/1"
DEFAULT_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


#: One contender for a conversation's lock, in its own process as each replica is: it builds the lock
#: store from the endpoints file as Rasa does, takes the lock at the same instants as the other
#: contenders, and counts the times it found someone else inside.
CONTENDER = """
import asyncio, json, sys, time
import redis
from rasa.core.lock_store import LockStore
from rasa.utils.endpoints import read_endpoint_config

endpoints, conversation, rounds, inside_key, redis_url = sys.argv[1:6]
store = LockStore.create(read_endpoint_config(endpoints, "lock_store"))
counter = redis.Redis.from_url(redis_url)

async def contend():
    report = {"held": 0, "overlaps": 0, "errors": []}
    for _ in range(int(rounds)):
        await asyncio.sleep(-time.time() % 0.05)
        try:
            async with store.lock(conversation, lock_lifetime=10, wait_time_in_seconds=0.01):
                report["held"] += 1
                if counter.incr(inside_key) > 1:
                    report["overlaps"] += 1
                await asyncio.sleep(0.005)
                counter.decr(inside_key)
        except Exception as exc:
            report["errors"].append(repr(exc)[:200])
    print(json.dumps(report))

asyncio.run(contend())
"""
CONTENDERS = 2
ROUNDS = 60

#: Small talk the bot answers whatever came before; sent all at once in the concurrency test.
BURST = ("hi there", "are you a bot?", "thank you!", "hello", "are you a human?", "thanks a lot")


def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL") or load_settings_env("TEST_REDIS_URL") or DEFAULT_REDIS


def rabbitmq_url() -> str:
    return os.environ.get("TEST_RABBITMQ_URL") or load_settings_env("TEST_RABBITMQ_URL") or DEFAULT_RABBITMQ


# --- the engines --------------------------------------------------------------------------


def _redis_client() -> Any:
    import redis

    return redis.Redis.from_url(redis_url(), socket_timeout=5, socket_connect_timeout=5)


def _postgres_ping() -> None:
    from sqlalchemy import text

    from bot.store import db

    engine = db.make_engine(pg_admin_url())
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    finally:
        engine.dispose()


def _redis_ping() -> None:
    client = _redis_client()
    try:
        client.ping()
    finally:
        client.close()


def _rabbitmq_ping() -> None:
    async def ping() -> None:
        import aio_pika

        connection = await aio_pika.connect(rabbitmq_url(), timeout=5)
        await connection.close()

    asyncio.run(ping())


def _require_engines() -> None:
    """Fail, naming the engine and its setting, when one of the three cannot be reached."""
    engines = (
        ("PostgreSQL", pg_admin_url, "the tracker store and the shop's store", "TEST_POSTGRES_URL", _postgres_ping),
        ("Redis", redis_url, "the lock store", "TEST_REDIS_URL", _redis_ping),
        ("RabbitMQ", rabbitmq_url, "the event broker", "TEST_RABBITMQ_URL", _rabbitmq_ping),
    )
    problems = []
    for name, url, role, setting, ping in engines:
        try:
            ping()
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            reason = (str(exc).strip().splitlines() or [""])[0][:160]
            problems.append(f"{name} at {_shown(url())} is not reachable ({exc.__class__.__name__}: {reason}); "
                            f"running scaled out needs it as {role} (set {setting}).")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True) if "://" in url else url


async def _drop_broker_objects(queue: str, exchange: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(rabbitmq_url(), timeout=10)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


def _subscribers(channel: str) -> int:
    """How many connections listen on a Redis pub/sub channel."""
    client = _redis_client()
    try:
        return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))
    finally:
        client.close()


def _delete_lock_keys(prefix: str) -> None:
    client = _redis_client()
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --- the servers --------------------------------------------------------------------------


def _ready(url: str, path: str, params: Optional[Dict[str, str]] = None) -> Optional[httpx.Response]:
    try:
        answer = httpx.get(f"{url}{path}", params=params, timeout=2)
    except httpx.HTTPError:
        return None
    return answer if answer.status_code == 200 else None


def _action_server(port: int, env: Mapping[str, str]) -> Server:
    """The action server, ready when its /health answers."""
    url = f"http://127.0.0.1:{port}"
    return Server([sys.executable, "-m", "bot.serving.action_server"], env={**env, "ACTION_PORT": str(port)},
                  name="the action server", ready=lambda: _ready(url, "/health"), own_session=True)


def _replica(name: str, port: int, env: Mapping[str, str], tmp: Path) -> Server:
    """A Rasa server, ready when its /status names the loaded model."""
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        status = _ready(url, "/status", {"token": TOKEN})
        return status is not None and bool(status.json().get("model_file"))

    return Server([sys.executable, "-m", "bot.serving.rasa_server", "run", "--model", str(MODEL), "--enable-api",
                   "--endpoints", str(tmp / "endpoints.yml"), "--credentials", str(tmp / "credentials.yml"),
                   "--interface", "127.0.0.1", "--port", str(port)], env=env, name=f"Rasa replica {name}",
                  ready=ready, own_session=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """An action server and two Rasa replicas sharing tracker store, lock store, event broker and widget rooms."""
    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    _require_engines()
    tmp = tmp_path_factory.mktemp("scaled")
    run = uuid.uuid4().hex[:10]
    lock_prefix, queue, exchange = f"wismotest{run}", f"wismo-test-{run}", f"wismo-test-{run}"
    widget_channel = f"wismo-test-widget-{run}"
    databases = _Databases("postgresql", tmp)
    servers: List[Server] = []
    try:
        store_url = databases.new_url()
        tracker_db = make_url(databases.new_url())
        redis_at = make_url(redis_url())
        amqp_at = make_url(rabbitmq_url())
        action_port = free_port()
        action_url = f"http://127.0.0.1:{action_port}"
        (tmp / "endpoints.yml").write_text(ENDPOINTS)
        (tmp / "credentials.yml").write_text(yaml.safe_dump({
            "connectors.rest.RestInput": None,
            "connectors.widget.WidgetInput": {"redis_url": redis_url(), "redis_channel": widget_channel},
            "connectors.updates.UpdatesInput": None,
        }, sort_keys=False))
        env = {
            **os.environ,
            "DATABASE_URL": store_url,
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "PYTHONUNBUFFERED": "1",
            "RASA_TELEMETRY_ENABLED": "false",
            "ACTION_ENDPOINT_URL": f"{action_url}/webhook",
            "ACTION_SERVER_TOKEN": ACTION_TOKEN,
            "RASA_AUTH_TOKEN": TOKEN,
            "TRACKER_DB_HOST": tracker_db.host or "127.0.0.1",
            "TRACKER_DB_PORT": str(tracker_db.port or 5432),
            "TRACKER_DB_NAME": tracker_db.database or "",
            "TRACKER_DB_USER": tracker_db.username or "postgres",
            "TRACKER_DB_PASSWORD": tracker_db.password or "",
            "REDIS_HOST": redis_at.host or "127.0.0.1",
            "REDIS_PORT": str(redis_at.port or 6379),
            "REDIS_DB": redis_at.database or "1",
            "REDIS_PASSWORD": redis_at.password or "",
            "REDIS_KEY_PREFIX": lock_prefix,
            "RABBITMQ_HOST": amqp_at.host or "127.0.0.1",
            "RABBITMQ_PORT": str(amqp_at.port or 5672),
            "RABBITMQ_USER": amqp_at.username or "guest",
            "RABBITMQ_PASSWORD": amqp_at.password or "guest",
            "RABBITMQ_QUEUE": queue,
            "RABBITMQ_EXCHANGE": exchange,
            # Proactive updates: both replicas run the outbox, polling often so they race for each update.
            "AFTERSHIP_WEBHOOK_SECRET": FEED_SECRET,
            "NOTIFY_QUIET_HOURS": "",
            "NOTIFY_POLL_SECONDS": "0.2",
        }
        servers.append(_action_server(action_port, env).launch())
        replicas: List[str] = []
        for name in ("A", "B"):
            port = free_port()
            servers.append(_replica(name, port, env, tmp).launch())
            replicas.append(f"http://127.0.0.1:{port}")
        # The store is seeded while the replicas load their model.
        subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=env, check=True, capture_output=True)
        listed = subprocess.run([sys.executable, "-m", "bot", "demo-orders", "--json"], cwd=ROOT, env=env,
                                check=True, capture_output=True, text=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for server in servers:  # they start side by side: one deadline for all
            server.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        yield {"replicas": replicas, "servers": servers,
               "orders": {row["scenario"]: row for row in json.loads(listed.stdout)},
               "queue": queue, "env": env, "endpoints": tmp / "endpoints.yml", "lock_prefix": lock_prefix,
               "widget_channel": widget_channel}
    finally:
        for server in reversed(servers):
            server.stop(timeout=STOP_TIMEOUT_S)
        try:
            asyncio.run(_drop_broker_objects(queue, exchange))
        finally:
            try:
                _delete_lock_keys(lock_prefix)
            finally:
                databases.drop_all()


# --- talking to the replicas --------------------------------------------------------------


async def say(client: httpx.AsyncClient, replica: str, sender: str, text: str) -> List[Dict[str, Any]]:
    """Send one REST message to `replica`; the bot's messages in answer."""
    return await rest_messages_async(client, replica, sender, text, timeout=REPLY_TIMEOUT_S)


def texts(messages: Sequence[Mapping[str, Any]]) -> List[str]:
    return [m["text"] for m in messages if m.get("text")]


async def tracker_events(client: httpx.AsyncClient, replica: str, sender: str) -> List[Dict[str, Any]]:
    answer = await client.get(f"{replica}/conversations/rest:{sender}/tracker", params={"token": TOKEN}, timeout=30)
    assert answer.status_code == 200, answer.text[:500]
    return answer.json()["events"]


def turns(events: Sequence[Mapping[str, Any]]) -> List[Tuple[str, List[str], bool]]:
    """Each user message with the bot's texts after it, and whether the bot went back to listening before the next."""
    found: List[Tuple[str, List[str], bool]] = []
    for event in events:
        if event["event"] == "user":
            found.append((event.get("text") or "", [], False))
        elif found and event["event"] == "bot" and not found[-1][2]:
            found[-1][1].append(event.get("text") or "")
        elif found and event["event"] == "action" and event.get("name") == "action_listen":
            user, said, _ = found[-1]
            found[-1] = (user, said, True)
    return found


# --- the behaviour ------------------------------------------------------------------------


async def test_one_conversation_moves_between_replicas_message_by_message(cluster):
    """The question on A, the order number on B, the postcode on A: the status answer arrives.

    Each replica reads the form state the other one left in the shared
    tracker store, and the action server finds the order in the PostgreSQL store.
    """
    a, b = cluster["replicas"]
    order = cluster["orders"]["in_transit_on_time"]
    sender = f"shopper-{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient() as client:
        asked = " ".join(texts(await say(client, a, sender, "where is my order?")))
        assert "order number" in asked
        asked = " ".join(texts(await say(client, b, sender, order["order_number"])))
        assert "email address on the order, or the delivery postcode" in asked
        answer = " ".join(texts(await say(client, a, sender, order["postcode"])))
        assert "that matches" in answer and "on its way" in answer
        for number in order["tracking_numbers"]:
            assert number in answer
        seen_by_a = await tracker_events(client, a, sender)
        seen_by_b = await tracker_events(client, b, sender)
    assert [e["event"] for e in seen_by_a] == [e["event"] for e in seen_by_b]
    assert [t[0] for t in turns(seen_by_b)] == ["where is my order?", order["order_number"], order["postcode"]]


def test_two_processes_never_hold_one_conversations_lock_at_once(cluster):
    """Processes taking the configured lock for one conversation at the same instants take turns.

    Each of them builds the lock store from the replicas' endpoints file, as a
    Rasa replica does, and every round all of them ask for the lock in the
    same millisecond.  Every request is granted, and never while another
    process holds the lock.
    """
    conversation = f"contended-{uuid.uuid4().hex[:8]}"
    inside_key = f"{cluster['lock_prefix']}:inside:{conversation}"
    argv = [sys.executable, "-c", CONTENDER, str(cluster["endpoints"]), conversation, str(ROUNDS), inside_key,
            redis_url()]
    contenders = [subprocess.Popen(argv, cwd=ROOT, env=cluster["env"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for _ in range(CONTENDERS)]
    reports = []
    for contender in contenders:
        out, err = contender.communicate(timeout=60)
        assert contender.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["errors"] == [] for r in reports), reports
    assert [r["held"] for r in reports] == [ROUNDS] * CONTENDERS
    assert sum(r["overlaps"] for r in reports) == 0, f"the lock was held twice at once: {reports}"


async def test_messages_sent_at_once_to_both_replicas_are_answered_one_turn_at_a_time(cluster):
    """Six messages of one conversation fired together at A and B: each is answered, none interleaves.

    The shared lock store queues the turns of one conversation across the
    replicas, so the tracker holds every message exactly once, each followed
    by the bot's answer (the same one the sender got back) and a return to
    listening before the next message starts.
    """
    a, b = cluster["replicas"]
    sender = f"shopper-{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient() as client:
        await say(client, a, sender, "hi")  # the session starts before the burst
        replies = await asyncio.gather(*(say(client, (a, b)[i % 2], sender, text) for i, text in enumerate(BURST)))
        events = await tracker_events(client, b, sender)
    for text, reply in zip(BURST, replies):
        assert texts(reply), f"no answer to {text!r}"
    held = turns(events)
    assert sorted(user for user, _, _ in held) == sorted(("hi",) + BURST)
    for user, said, back_to_listening in held:
        assert said and back_to_listening, f"the turn of {user!r} was interleaved with another: {held}"
    answers = {text: texts(reply) for text, reply in zip(BURST, replies)}
    for user, said, _ in held[1:]:
        assert said == answers[user], f"{user!r}: the tracker holds {said}, the sender got {answers[user]}"


async def test_the_event_broker_receives_the_conversation_from_both_replicas(cluster):
    """Every user message and bot answer of a conversation held on A and B arrives in the RabbitMQ queue."""
    import aio_pika

    a, b = cluster["replicas"]
    sender = f"shopper-{uuid.uuid4().hex[:10]}"
    sent = {"hi there": a, "are you a bot?": b}
    answered: List[str] = []
    async with httpx.AsyncClient() as client:
        for text, replica in sent.items():
            answered += texts(await say(client, replica, sender, text))
    users: List[str] = []
    bots: List[str] = []
    connection = await aio_pika.connect(rabbitmq_url(), timeout=10)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(cluster["queue"], durable=True, passive=True)
        deadline = time.monotonic() + 20
        while (len(users) < len(sent) or len(bots) < len(answered)) and time.monotonic() < deadline:
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                await asyncio.sleep(0.2)
                continue
            await message.ack()
            event = json.loads(message.body)
            if event.get("sender_id") != f"rest:{sender}":
                continue
            if event.get("event") == "user":
                users.append(event.get("text"))
            elif event.get("event") == "bot":
                bots.append(event.get("text"))
    finally:
        await connection.close()
    assert users == list(sent)
    assert bots == answered


async def test_an_agents_reply_sent_through_one_replica_reaches_the_widget_connected_to_the_other(cluster):
    """A shopper's widget is connected to A; the console's reply and hand-back, sent through B, arrive in it.

    B sends them to the session's socket.io room; the replicas share the
    rooms through Redis, so A passes them on to the widget connected there.
    The hand-back greeting is the next thing the widget gets after the reply:
    the reply came once.
    """
    a, b = cluster["replicas"]
    reply = "Hi, this is Sam from the shop: your parcel left our warehouse this morning."
    console = RasaClient(b, TOKEN)
    try:
        async with Shopper(a) as shopper:
            session = await shopper.session(new_session_id())
            await shopper.say("hi", session)
            assert await shopper.turn(REPLY_TIMEOUT_S), "the assistant did not greet the widget on A"
            # A subscribes when its first widget connects; B has none.
            await wait_for(lambda: _subscribers(cluster["widget_channel"]) >= 1,
                           what="replica A listening on the widget channel", timeout=10)
            await console.send_reply(f"widget:{session}", reply, "Sam Jansen")
            assert await shopper.reply(REPLY_TIMEOUT_S) == {"text": reply, "agent": "Sam Jansen"}
            await console.resume(f"widget:{session}", greet=True)
            back = await shopper.reply(REPLY_TIMEOUT_S)
    finally:
        await console.aclose()
    assert BACK_WITH_BOT in back["text"]


async def test_each_proactive_update_is_said_once_with_two_replicas_running_the_outbox(cluster):
    """Both replicas poll the outbox every 0.2 s; each update is claimed by one and said once."""
    from bot.domain import aftership

    order = cluster["orders"]["in_transit_on_time"]
    first, second = cluster["replicas"]
    sender = f"replicas-updates-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient() as client:
        await say(client, first, sender, f"where is {order['order_number']}? {order['email']}")
        said = texts(await say(client, second, sender, "/subscribe_updates"))
        assert any("I'll message you here when anything changes" in t for t in said)
        slug = {"royalmail": "royal-mail"}.get(order["carrier"], order["carrier"])
        now = time.time()
        changes = [("InTransit", "InTransit_003", "At the depot", 50), ("OutForDelivery", "OutForDelivery_001",
                                                                         "Out for delivery", 40)]
        for index, (tag, subtag, message, minutes_ago) in enumerate(changes):
            body = json.dumps(aftership.sample_webhook(
                tracking_number=order["tracking_numbers"][-1], slug=slug, tag=tag, subtag=subtag, message=message,
                checkpoint_time=datetime.fromtimestamp(now - 60 * minutes_ago, timezone.utc))).encode()
            answer = await client.post(f"{cluster['replicas'][index % 2]}/webhooks/aftership/webhook", content=body,
                                       headers={aftership.SIGNATURE_HEADER: aftership.sign(FEED_SECRET, body)})
            assert answer.status_code == 200, answer.text

        from sqlalchemy import create_engine, text

        store = create_engine(cluster["env"]["DATABASE_URL"], future=True)
        try:
            def closed() -> List[Tuple[str, str]]:
                with store.connect() as conn:
                    rows = conn.execute(text("SELECT state, outcome FROM notifications WHERE conversation_id = :c"),
                                        {"c": f"rest:{sender}"}).all()
                return [(r[0], r[1]) for r in rows] if rows and all(r[0] != "queued" for r in rows) else []

            # Once no update is queued, neither replica can claim one again: the transcript is final.
            rows = await wait_for(closed, what="the update sent by one of the replicas", timeout=60)
        finally:
            store.dispose()
        events = await tracker_events(client, first, sender)
        updates = [e.get("text") for e in events
                   if e["event"] == "bot" and (e.get("text") or "").startswith("Good news")]
        assert [state for state, _ in rows if state == "sent"] == ["sent"] and len(updates) == 1
