"""The Rasa server's patches keep Rasa's behaviour and drop the measured cost.

The action-server answer is still validated: a malformed answer from a real
HTTP server on loopback is refused as Rasa refuses it, a good one goes through,
and the schema is checked once, not on every answer.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, Tuple

import jsonschema
import pytest
import rasa.core.run
from aiohttp import web
from rasa.core.actions.action import RemoteAction
from rasa.core.channels.channel import CollectingOutputChannel
from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig
from sqlalchemy.engine import make_url

from bot.serving import rasa_patches, rasa_server

GOOD = {"events": [{"event": "slot", "name": "order_number", "value": "WS-1003"}],
        "responses": [{"text": "hello"}]}
MALFORMED = [
    {"events": [{"event": "no_such_event"}]},
    {"events": {"event": "slot", "name": "x", "value": 1}},  # not a list
    {"events": [{"event": "slot", "value": 1}]},  # a slot event without its name
    {"responses": ["just text"]},
    [],
]


#: What `install` replaces; each test puts Rasa's own back afterwards.
PATCHED = ((RemoteAction, "_validate_action_result"), (SQLTrackerStore, "__init__"),
           (SQLTrackerStore, "_retrieve"), (SQLTrackerStore, "save"), (Event, "resolve_by_type"),
           (EndpointConfig, "session"), (rasa.core.run, "close_resources"))


@pytest.fixture
def unpatched(monkeypatch):
    """Rasa as it comes, restored after the test whatever it installs."""
    for owner, name in PATCHED:
        monkeypatch.setattr(owner, name, inspect.getattr_static(owner, name))


@pytest.fixture
def patched(unpatched):
    rasa_patches.install()


patched_store = patched


@pytest.mark.parametrize("answer", MALFORMED)
def test_a_malformed_answer_is_refused_with_the_same_error_as_rasa_gives(answer, patched):
    action = RemoteAction("action_check", None)
    with pytest.raises(jsonschema.ValidationError) as ours:
        action._validate_action_result(copy.deepcopy(answer))
    with pytest.raises(jsonschema.ValidationError) as rasas:
        jsonschema.validate(copy.deepcopy(answer), RemoteAction.action_response_format_spec())
    assert ours.value.message.startswith(rasas.value.message)
    assert "Failed to validate Action server response" in ours.value.message
    assert list(ours.value.path) == list(rasas.value.path)


def test_a_good_answer_passes_and_the_schema_is_checked_once(patched, monkeypatch):
    action = RemoteAction("action_check", None)
    assert action._validate_action_result(copy.deepcopy(GOOD)) is True
    checks = []
    cls = type(rasa_patches.action_result_check().full)
    original = cls.check_schema
    monkeypatch.setattr(cls, "check_schema", classmethod(lambda c, *a, **k: checks.append(a) or original(*a, **k)))
    for _ in range(3):
        assert action._validate_action_result(copy.deepcopy(GOOD)) is True
    assert checks == []


async def _serve(webhook: Any) -> Tuple[web.AppRunner, int]:
    """A real HTTP server on loopback answering POST /webhook with `webhook`; its runner and port."""
    app = web.Application()
    app.router.add_post("/webhook", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _run_against(answer: Any) -> list:
    """Run a RemoteAction against a real action server on loopback that answers `answer`."""
    async def webhook(_request: web.Request) -> web.Response:
        return web.json_response(answer)

    runner, port = await _serve(webhook)
    try:
        action = RemoteAction("action_check", EndpointConfig(f"http://127.0.0.1:{port}/webhook"))
        return await action.run(CollectingOutputChannel(), TemplatedNaturalLanguageGenerator({}),
                                DialogueStateTracker("shopper", []), Domain.empty())
    finally:
        await rasa_patches.close_sessions()
        await runner.cleanup()


async def test_the_rasa_server_refuses_a_malformed_action_server_answer(patched):
    with pytest.raises(jsonschema.ValidationError):
        await _run_against({"events": [{"event": "slot", "value": "WS-1003"}]})
    events = await _run_against(GOOD)
    assert SlotSet("order_number", "WS-1003") in events


def test_the_rasa_server_process_installs_the_patches(unpatched, monkeypatch):
    """`python -m bot.serving.rasa_server` patches Rasa before Rasa's CLI runs."""
    monkeypatch.setattr(rasa_server.redaction, "install", lambda: None)
    monkeypatch.setenv("RASA_AUTH_TOKEN", "a-token-for-this-test-only-1234567890")
    # Settings read earlier in this process (without a .env on a fresh clone) must not hide the variable.
    from bot.config import get_settings

    get_settings.cache_clear()
    seen: Dict[str, Any] = {}

    def fake_cli() -> None:
        seen["validator"] = RemoteAction._validate_action_result

    monkeypatch.setattr("rasa.__main__.main", fake_cli)
    monkeypatch.setattr("sys.argv", ["rasa_server"])
    try:
        rasa_server.main(["run", "--enable-api"])
    finally:
        get_settings.cache_clear()
    assert seen["validator"] is rasa_patches.validate_action_result


# --- the SQL tracker store -------------------------------------------------------------------

DOMAIN = Domain.from_yaml("""
version: "3.1"
intents: [greet]
slots:
  order_number:
    type: any
    mappings: [{type: custom}]
responses:
  utter_greet: [{text: hi}]
""")


def _store(url: str) -> SQLTrackerStore:
    parts = make_url(url)
    if parts.get_backend_name() == "sqlite":
        return SQLTrackerStore(DOMAIN, dialect="sqlite", db=parts.database)
    return SQLTrackerStore(DOMAIN, dialect="postgresql", host=parts.host, port=parts.port or 5432,
                           db=parts.database, username=parts.username, password=parts.password)


def _turn(tracker: DialogueStateTracker, number: int) -> None:
    tracker.update(ActionExecuted("action_listen"))
    tracker.update(UserUttered(f"message {number}", {"name": "greet", "confidence": 1.0}))
    tracker.update(SlotSet("order_number", f"WS-{1000 + number}"))
    tracker.update(BotUttered(f"answer {number}"))


@pytest.fixture
def tracker_db(databases) -> str:
    return databases.new_url()


async def _conversation(store: SQLTrackerStore, sender: str, turns: int) -> None:
    """What the processor does each turn: read the conversation (or start it), add a turn, save."""
    for number in range(turns):
        tracker = await store.retrieve(sender) or DialogueStateTracker(sender, DOMAIN.slots)
        _turn(tracker, number)
        await store.save(tracker)


async def test_the_patched_store_writes_what_rasas_store_writes(tracker_db, unpatched, monkeypatch):
    """Turn by turn, the patched store keeps exactly the events Rasa's own store keeps."""
    plain = _store(tracker_db)
    await _conversation(plain, "plain", 4)
    rasa_patches.install()
    patched = _store(tracker_db)
    await _conversation(patched, "patched", 4)

    def dump(tracker: DialogueStateTracker) -> list:
        return [{k: v for k, v in e.as_dict().items() if k != "timestamp"} for e in tracker.events]

    ours, theirs = await patched.retrieve("patched"), await patched.retrieve("plain")
    assert len(ours.events) == 16
    assert dump(ours) == dump(theirs)
    # Rasa's own code reads what the patched store wrote.
    monkeypatch.undo()  # Rasa's own methods again
    assert dump(await _store(tracker_db).retrieve("patched")) == dump(theirs)


async def test_a_tracker_the_store_read_is_saved_without_counting(tracker_db, patched_store, monkeypatch):
    store = _store(tracker_db)
    await _conversation(store, "shopper", 2)
    counted = []
    original = SQLTrackerStore._event_query

    def spy(self, session, sender_id, fetch_events_from_all_sessions):
        counted.append(sender_id)
        return original(self, session, sender_id, fetch_events_from_all_sessions)

    monkeypatch.setattr(SQLTrackerStore, "_event_query", spy)
    tracker = await store.retrieve("shopper")
    reads = len(counted)
    _turn(tracker, 2)
    await store.save(tracker)
    assert len(counted) == reads  # no count query for the save
    # A tracker the store did not read (a copy) is counted, so nothing is written twice.
    copy_of = tracker.copy()
    _turn(copy_of, 3)
    await store.save(copy_of)
    assert len(counted) > reads
    assert len((await store.retrieve("shopper")).events) == 16


async def test_tracker_reads_and_writes_run_off_the_event_loop(tracker_db, patched_store, monkeypatch):
    import threading

    loop_thread = threading.get_ident()
    threads = []
    for name in ("_read", "_write_new_events"):
        original = getattr(rasa_patches, name)

        def spy(*args, _original=original, **kwargs):
            threads.append(threading.get_ident())
            return _original(*args, **kwargs)

        monkeypatch.setattr(rasa_patches, name, spy)
    await _conversation(_store(tracker_db), "shopper", 2)
    assert len(threads) == 4 and loop_thread not in threads


def test_a_sqlite_tracker_store_uses_write_ahead_logging(tmp_path, patched_store):
    store = _store(f"sqlite:///{tmp_path / 'tracker.db'}")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


# --- event classes by name -------------------------------------------------------------------

def test_event_classes_are_found_as_rasa_finds_them(unpatched):
    from rasa.shared.core import events
    from rasa.shared.utils.common import all_subclasses

    original = events.Event.resolve_by_type
    names = {cls.type_name for cls in all_subclasses(events.Event)}
    expected = {name: original(name) for name in names}
    rasa_patches.install()
    assert {name: events.Event.resolve_by_type(name) for name in names} == expected
    assert events.Event.resolve_by_type("no_such_event", default=events.BotUttered) is events.BotUttered
    with pytest.raises(ValueError, match="Unknown event name"):
        events.Event.resolve_by_type("no_such_event")
    # Parsed back from a dict through Rasa's own entry point.
    assert isinstance(events.Event.from_parameters({"event": "slot", "name": "a", "value": 1}), events.SlotSet)

    class LateEvent(events.Event):  # defined after the table was built
        type_name = "late_event_for_this_test"

        def __eq__(self, other):
            return isinstance(other, LateEvent)

        def __hash__(self):
            return 1

        def __str__(self):
            return "LateEvent()"

        def as_story_string(self):
            return None

    assert events.Event.resolve_by_type("late_event_for_this_test") is LateEvent


def test_looking_up_an_event_class_does_not_walk_the_subclasses(patched, monkeypatch):
    from rasa.shared.core import events

    events.Event.resolve_by_type("slot")
    walks = []
    original = rasa_patches.all_subclasses
    monkeypatch.setattr(rasa_patches, "all_subclasses", lambda cls: walks.append(cls) or original(cls))
    monkeypatch.setattr("rasa.shared.utils.common.all_subclasses", lambda cls: walks.append(cls) or original(cls))
    for name in ("slot", "user", "bot", "action", "active_loop"):
        events.Event.resolve_by_type(name)
    assert walks == []


def _sample_events() -> list:
    """One event of every kind Rasa knows, as an action server would send it."""
    from rasa.shared.core import events as ev

    return [e.as_dict() for e in (
        ev.UserUttered("hi", {"name": "greet", "confidence": 1.0}), ev.ActionExecuted("action_listen"),
        ev.SlotSet("order_number", "WS-1003"), ev.EntitiesAdded([{"entity": "x", "value": "y"}]),
        ev.ReminderCancelled(name="r"), ev.ActionExecutionRejected("action_x"), ev.LoopInterrupted(True),
        ev.ActiveLoop("verify_form"), ev.AllSlotsReset(), ev.ConversationResumed(), ev.ConversationPaused(),
        ev.FollowupAction("action_x"), ev.StoryExported(), ev.Restarted(), ev.ActionReverted(),
        ev.UserUtteranceReverted(), ev.BotUttered("hello", {"buttons": []}), ev.SessionStarted(),
        ev.AgentUttered("hi"), ev.DefinePrevUserUtteredFeaturization(False))]


def _variants(event: dict) -> list:
    """The event and ways an action server could get it wrong."""
    out = [event, {k: v for k, v in event.items() if k != "event"}, {**event, "event": "slot"},
           {**event, "event": 7}, {**event, "event": None}, {**event, "timestamp": "yesterday"}, "text", None]
    for key, value in event.items():
        if key != "event":
            out.append({k: v for k, v in event.items() if k != key})
            out.append({**event, key: [value]})
            out.append({**event, key: 12345})
    return out


def test_the_fast_check_accepts_and_refuses_exactly_what_the_full_schema_does():
    check = rasa_patches.action_result_check()
    assert check.shell is not None, "the schema of this Rasa version is checked in full on every answer"
    answers = [{}, {"events": []}, {"events": None}, {"responses": [{"text": "x"}], "events": "x"}, "x", 3]
    for event in _sample_events():
        for variant in _variants(event):
            answers.append({"events": [variant]})
            answers.append({"events": [_sample_events()[2], variant], "responses": [{"text": "ok"}]})
    disagreements = [a for a in answers if check.valid(a) != check.full.is_valid(a)]
    assert disagreements == []
    assert sum(check.full.is_valid(a) for a in answers) > 40  # both kinds are in the sample
    assert sum(not check.full.is_valid(a) for a in answers) > 40


# --- kept-alive connections to the action server ------------------------------------------------

async def _action_server(close_each: bool = False):
    """A real action server stand-in on loopback that notes the client port of every call."""
    ports: list = []

    async def webhook(request: web.Request) -> web.Response:
        ports.append(request.transport.get_extra_info("peername")[1])
        answer = web.json_response({"events": [{"event": "slot", "name": "order_number", "value": "WS-1003"}]})
        if close_each:
            answer.force_close()
        return answer

    runner, port = await _serve(webhook)
    return runner, port, ports


async def _run_action(endpoint: EndpointConfig) -> list:
    action = RemoteAction("action_check", endpoint)
    return await action.run(CollectingOutputChannel(), TemplatedNaturalLanguageGenerator({}),
                            DialogueStateTracker("shopper", []), Domain.empty())


async def test_calls_to_the_action_server_reuse_one_connection(patched):
    runner, port, ports = await _action_server()
    try:
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}/webhook", headers={"Authorization": "Bearer t"})
        for _ in range(4):
            assert SlotSet("order_number", "WS-1003") in await _run_action(endpoint)
        assert len(ports) == 4 and len(set(ports)) == 1
    finally:
        await rasa_patches.close_sessions()
        await runner.cleanup()


async def test_a_connection_the_action_server_closed_is_replaced(patched):
    runner, port, ports = await _action_server(close_each=True)
    try:
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}/webhook")
        for _ in range(3):
            assert SlotSet("order_number", "WS-1003") in await _run_action(endpoint)
        assert len(set(ports)) == 3
    finally:
        await rasa_patches.close_sessions()
        await runner.cleanup()


async def test_the_kept_session_sends_the_endpoints_headers_and_is_closed_when_the_server_stops(patched):
    seen = []

    async def webhook(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"events": []})

    runner, port = await _serve(webhook)
    try:
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}/webhook", headers={"Authorization": "Bearer secret"})
        await _run_action(endpoint)
        session = rasa_patches.kept_session(endpoint)
        assert seen == ["Bearer secret"] and not session.closed

        class App:
            class ctx:  # noqa: N801 - Sanic's attribute name
                agent = None

        await rasa.core.run.close_resources(App(), None)
        assert session.closed
    finally:
        await runner.cleanup()
