"""The changes this project makes to how the Rasa server runs, all in one place.

`bot.serving.rasa_server` calls :func:`install` before Rasa starts, so every
Rasa process the project launches (`python -m bot run`, the scaled-out
replicas, the tests' servers) runs with them.  Each one keeps Rasa's behaviour
and removes a cost a profile of the running server showed; `tests/test_rasa_patches.py`
checks both halves.

* **The action server's answer is validated with validators built once.**
  Rasa 3.6 checks every action-server response with
  ``jsonschema.validate(result, schema)``.  That call picks a validator class,
  checks the schema against its meta-schema and builds a new validator, every
  time; with jsonschema 4.17 this took more than half the server's CPU in a
  status conversation.  The schema never changes, so it is checked once here.
  Each event of an answer is then checked against the one event schema its
  `event` names rather than trying all twenty-three of Rasa's `oneOf`, which
  accepts and refuses exactly the same answers (see `ActionResultCheck`).  A
  malformed response is refused as before: the same
  `jsonschema.ValidationError` (the best match among the errors, as `validate`
  picks it), with Rasa's hint appended.
* **An event's class is found by its name in a table.**  Rasa turns each
  stored or received event into its class by walking every subclass of
  `Event` (with an `isabstract` check on each), once per event: dozens of
  times for every tracker read and every action answer.  The table is built
  from the same walk, keeps Rasa's choice where two classes share a name (the
  first found), and is rebuilt when a name is missing, so events defined
  later are still found and unknown names fail as before.
* **The SQL tracker store works off the event loop and counts less.**  Rasa's
  `SQLTrackerStore` runs its queries and commits inside `async` methods, so
  while one conversation is read or written (a SQLite commit waits for the
  disk) every other conversation on the server waits too; here `retrieve` and
  the database half of `save` run on a worker thread.  `save` also counted the
  stored events of the conversation on every turn to know which ones are new;
  the tracker the store just read carries that number already, so the store
  remembers it (and counts as before for a tracker it did not read).  Turns of
  one conversation never overlap (the lock store), so the number is exact.
  Rows are read as their JSON column and written with one multi-row insert,
  without building an ORM object per event: the same rows, a fraction of the
  CPU the main thread waits for.
* **The action server is reached over kept-alive connections.**  Rasa builds
  a new HTTP client session for every call to the action server, so every
  action opened a new TCP connection (with a name lookup on a worker thread)
  and closed it again, two or three times a turn, on both sides.  Here each
  endpoint keeps one client session for the server's lifetime, with the same
  headers, authentication and time-out; idle connections are closed after
  `KEEPALIVE_S`, before the action server's own keep-alive limit (5 s), so a
  call never goes out on a connection the server is closing.  The sessions
  are closed with Rasa's other resources when the server stops.
* **A SQLite tracker store keeps its connections open and uses write-ahead
  logging** (`journal_mode=WAL`, `synchronous=NORMAL`).  Rasa's engine opened
  a new connection for every read and write; now a small pool keeps a few.
  With WAL readers never wait for a writer and a commit no longer waits for
  the disk twice; a power cut can lose the last turns written, never the
  database.  PostgreSQL is left as configured.
* **Requests are bounded.**  Sanic reads a whole request body into memory
  before a route sees it, up to 100 MB, and Rasa allows an hour before a
  request must be answered (for training over the API, which this project
  does not use), so a stranger sending large or never-finished bodies could
  hold memory on every webhook route for an hour.  Every channel's body is
  small (a message, a signed webhook of at most 1 MiB): a body over
  `MAX_REQUEST_BYTES` is refused with 413 from its `Content-Length`, before it
  is read, and a request not answered within `RESPONSE_TIMEOUT_S` (a turn
  takes seconds) is closed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import weakref
from typing import Any, Callable, Dict, Optional, Text, Tuple, Type

import aiohttp
import rasa.core.run
import sqlalchemy as sa
from jsonschema import exceptions, validators
from jsonschema.protocols import Validator
from rasa.core.actions.action import RemoteAction
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.utils.common import all_subclasses
from rasa.utils.endpoints import DEFAULT_REQUEST_TIMEOUT, EndpointConfig
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import QueuePool

_ACTION_RESULT_HINT = (". Failed to validate Action server response from API, make sure your response from the "
                       f"Action endpoint is valid. For more information about the format visit "
                       f"{DOCS_BASE_URL}/custom-actions")

def _built(schema: Dict[Text, Any]) -> Validator:
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


class ActionResultCheck:
    """Rasa's schema for action-server answers, checked with validators built once.

    `full` is the whole schema.  An answer's events are a list of objects that
    must match exactly one of about twenty event schemas (`oneOf`), and each
    of those requires its own value of `event`; so an event is valid exactly
    when it passes the common part and the one schema named by its `event`.
    `valid` checks that way, each event against one schema instead of all of
    them.  Whenever that finds a fault, or the schema is not shaped as
    expected (another Rasa version), the full validator decides and explains,
    so the error is the one Rasa gives.
    """

    def __init__(self, schema: Dict[Text, Any]) -> None:
        self.full = _built(schema)
        self.shell: Optional[Validator] = None
        self.common: Optional[Validator] = None
        self.by_event: Dict[Any, Validator] = {}
        try:
            events = schema["properties"]["events"]
            item = events["items"]
            names = [option["properties"]["event"]["const"] for option in item["oneOf"]]
        except (KeyError, TypeError):
            return
        if "event" not in item.get("required", ()) or len(set(names)) != len(names):
            return
        shell = {**schema, "properties": {**schema["properties"], "events": {**events, "items": {}}}}
        self.shell = _built(shell)
        self.common = _built({key: value for key, value in item.items() if key != "oneOf"})
        self.by_event = {name: _built(option) for name, option in zip(names, item["oneOf"])}

    def valid(self, result: Any) -> bool:
        """True when `result` passes the schema; False means: ask `full` why not."""
        if self.shell is None or self.common is None or not self.shell.is_valid(result):
            return False
        for event in result.get("events") or ():
            if not self.common.is_valid(event):
                return False
            option = self.by_event.get(event["event"]) if isinstance(event["event"], str) else None
            if option is None or not option.is_valid(event):
                return False
        return True


_check: Optional[ActionResultCheck] = None


def action_result_check() -> ActionResultCheck:
    """The check for action-server answers, built (and its schemas checked) on first use."""
    global _check
    if _check is None:
        _check = ActionResultCheck(RemoteAction.action_response_format_spec())
    return _check


def validate_action_result(_action: RemoteAction, result: Dict[Text, Any]) -> bool:
    """`RemoteAction._validate_action_result`, with validators built once."""
    check = action_result_check()
    if check.valid(result):
        return True
    error = exceptions.best_match(check.full.iter_errors(result))
    if error is not None:
        error.message += _ACTION_RESULT_HINT
        raise error
    return True


# --- event classes by name ----------------------------------------------------------------

_event_classes: Dict[Text, Type[Event]] = {}
_original_resolve = Event.resolve_by_type


def _event_class_table() -> Dict[Text, Type[Event]]:
    table: Dict[Text, Type[Event]] = {}
    for cls in all_subclasses(Event):
        table.setdefault(cls.type_name, cls)
    return table


def resolve_event_type(type_name: Text, default: Optional[Type[Event]] = None) -> Optional[Type[Event]]:
    """`Event.resolve_by_type`, from a table instead of a walk over every subclass."""
    global _event_classes
    found = _event_classes.get(type_name)
    if found is None:
        _event_classes = _event_class_table()
        found = _event_classes.get(type_name)
    if found is not None:
        return found
    return _original_resolve(type_name, default)  # Rasa's answer for a name no class has


# --- kept-alive connections to the action server -----------------------------------------

#: Seconds an idle connection to an endpoint stays open (the action server closes its own after 5).
KEEPALIVE_S = 2.0

#: Every session opened here, so they can be closed when the server stops.
_sessions: weakref.WeakSet[aiohttp.ClientSession] = weakref.WeakSet()


class _KeptSession:
    """What `EndpointConfig.session()` returns: the endpoint's kept session, left open on exit."""

    def __init__(self, endpoint: EndpointConfig) -> None:
        self.endpoint = endpoint

    async def __aenter__(self) -> aiohttp.ClientSession:
        return kept_session(self.endpoint)

    async def __aexit__(self, *_exc: object) -> None:
        return None


def kept_session(endpoint: EndpointConfig) -> aiohttp.ClientSession:
    """The endpoint's client session on the running loop, made as Rasa makes it, on first use."""
    loop = asyncio.get_running_loop()
    session: Optional[aiohttp.ClientSession] = endpoint.__dict__.get("_kept_session")
    if session is None or session.closed or session._loop is not loop:
        auth = (aiohttp.BasicAuth(endpoint.basic_auth["username"], endpoint.basic_auth["password"])
                if endpoint.basic_auth else None)
        session = aiohttp.ClientSession(headers=endpoint.headers, auth=auth,
                                        timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
                                        connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_S))
        endpoint.__dict__["_kept_session"] = session
        _sessions.add(session)
    return session


async def close_sessions() -> None:
    """Close every kept session (the server is stopping)."""
    for session in list(_sessions):
        if not session.closed:
            await session.close()


_original_close_resources: Optional[Callable[..., Any]] = None


async def _close_resources(app: Any, loop: Any) -> None:
    """Rasa's `close_resources`, then the kept sessions."""
    assert _original_close_resources is not None
    try:
        await _original_close_resources(app, loop)
    finally:
        await close_sessions()


# --- the SQL tracker store --------------------------------------------------------------

#: id(tracker) -> (a weak reference to it, how many of its events are in the store).
_stored: Dict[int, Tuple[weakref.ReferenceType[DialogueStateTracker], int]] = {}


def remember_stored(tracker: DialogueStateTracker, count: int) -> None:
    """Note that the first `count` events of `tracker` are in the store; forgotten with the tracker."""
    key = id(tracker)

    def forget(_gone: object) -> None:
        _stored.pop(key, None)

    _stored[key] = (weakref.ref(tracker, forget), count)


def stored_count(tracker: DialogueStateTracker) -> Optional[int]:
    """How many of `tracker`'s events are in the store, if this process read or wrote it; else None."""
    entry = _stored.get(id(tracker))
    return entry[1] if entry is not None and entry[0]() is tracker else None


def _read(store: SQLTrackerStore, sender_id: Text, all_sessions: bool) -> Optional[DialogueStateTracker]:
    """What Rasa's `_retrieve` reads: the conversation's events (its latest session unless `all_sessions`)."""
    with store.session_scope() as session:
        query = store._event_query(session, sender_id, fetch_events_from_all_sessions=all_sessions)
        events = [json.loads(data) for (data,) in query.with_entities(store.SQLEvent.data)]
    if not (store.domain and events):
        return None
    return DialogueStateTracker.from_dict(sender_id, events, store.domain.slots)


async def _retrieve(store: SQLTrackerStore, sender_id: Text,
                    fetch_events_from_all_sessions: bool) -> Optional[DialogueStateTracker]:
    """Rasa's `_retrieve` on a worker thread; the tracker remembers how many events it was read with."""
    tracker = await asyncio.to_thread(_read, store, sender_id, fetch_events_from_all_sessions)
    if tracker is not None and not fetch_events_from_all_sessions:
        remember_stored(tracker, len(tracker.events))
    return tracker


def _write_new_events(store: SQLTrackerStore, tracker: DialogueStateTracker) -> None:
    """Insert the events of `tracker` the store does not have yet, in one transaction."""
    events = list(tracker.events)
    with store.session_scope() as session:
        known = stored_count(tracker)
        if known is None:
            known = store._event_query(session, tracker.sender_id, fetch_events_from_all_sessions=False).count()
        rows = []
        for event in itertools.islice(events, known, None):
            data = event.as_dict()
            rows.append({"sender_id": tracker.sender_id, "type_name": event.type_name,
                         "timestamp": data.get("timestamp"),
                         "intent_name": (data.get("parse_data") or {}).get("intent", {}).get("name"),
                         "action_name": data.get("name"), "data": json.dumps(data)})
        if rows:  # one multi-row INSERT, without building ORM objects for rows nobody reads back
            session.execute(store.SQLEvent.__table__.insert(), rows)
            session.commit()
    remember_stored(tracker, len(events))


async def _save(store: SQLTrackerStore, tracker: DialogueStateTracker) -> None:
    """Rasa's `save`: new events to the event broker, then to the database on a worker thread."""
    await store.stream_events(tracker)
    await asyncio.to_thread(_write_new_events, store, tracker)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


#: Connections kept open to a SQLite tracker store: as many as the worker threads that may use them at once.
SQLITE_POOL_SIZE = 4

_original_init: Optional[Callable[..., None]] = None


def _init(store: SQLTrackerStore, *args: Any, **kwargs: Any) -> None:
    assert _original_init is not None
    _original_init(store, *args, **kwargs)
    if store.engine.dialect.name == "sqlite" and store.engine.url.database not in (None, "", ":memory:"):
        # Rasa's engine opens a new SQLite connection for every read and write; a small pool
        # keeps them open (the worker threads share them, one at a time).
        url = store.engine.url
        store.engine.dispose()
        store.engine = sa.create_engine(url, poolclass=QueuePool, pool_size=SQLITE_POOL_SIZE, max_overflow=0,
                                        connect_args={"check_same_thread": False})
        sa.event.listen(store.engine, "connect", _sqlite_pragmas)
        store.sessionmaker = sessionmaker(bind=store.engine)


#: The largest request body the Rasa server reads (a signed feed webhook is at most 1 MiB).
MAX_REQUEST_BYTES = 2 * 1024 * 1024
#: How long a request may take, body included, before the server closes it.
RESPONSE_TIMEOUT_S = 120


def _bounded(app: Any) -> Any:
    app.config.REQUEST_MAX_SIZE = MAX_REQUEST_BYTES
    app.config.RESPONSE_TIMEOUT = RESPONSE_TIMEOUT_S
    return app


def _configure_app(*args: Any, **kwargs: Any) -> Any:
    """Rasa's `configure_app`, with the request limits above."""
    assert _original_configure_app is not None
    return _bounded(_original_configure_app(*args, **kwargs))


_original_configure_app: Optional[Callable[..., Any]] = None


def install() -> None:
    """Apply the changes to this process's Rasa classes (idempotent)."""
    global _original_init, _original_close_resources, _original_configure_app
    if _original_configure_app is None:
        _original_configure_app = rasa.core.run.configure_app
    rasa.core.run.configure_app = _configure_app
    RemoteAction._validate_action_result = validate_action_result
    if _original_init is None:
        _original_init = SQLTrackerStore.__init__
        _original_close_resources = rasa.core.run.close_resources
    EndpointConfig.session = lambda endpoint: _KeptSession(endpoint)
    rasa.core.run.close_resources = _close_resources
    Event.resolve_by_type = staticmethod(resolve_event_type)
    SQLTrackerStore._retrieve = _retrieve
    SQLTrackerStore.save = _save
    SQLTrackerStore.__init__ = _init
