"""The changes this project makes to how the Rasa server runs, all in one place.

`bot.serving.rasa_server` calls :func:`install` before Rasa starts, so every
Rasa process the project launches (`python -m bot run`, the scaled-out
replicas, the tests' servers) runs with them.  Each one keeps Rasa's behaviour
and removes a cost a profile of the running server showed; `tests/test_rasa_patches.py`
checks both halves.

* **The action server's answer is validated with a validator built once.**
  Rasa 3.6 checks every action-server response with
  ``jsonschema.validate(result, schema)``.  That call picks a validator class,
  checks the schema against its meta-schema and builds a new validator, every
  time; with jsonschema 4.17 this took more than half the server's CPU in a
  status conversation.  The schema never changes, so it is checked once here,
  and each response goes through the same validator.  A malformed response is
  refused exactly as before: the same `jsonschema.ValidationError` (the best
  match among the errors, as `validate` picks it), with Rasa's hint appended.
* **The SQL tracker store works off the event loop and counts less.**  Rasa's
  `SQLTrackerStore` runs its queries and commits inside `async` methods, so
  while one conversation is read or written (a SQLite commit waits for the
  disk) every other conversation on the server waits too; here `retrieve` and
  the database half of `save` run on a worker thread.  `save` also counted the
  stored events of the conversation on every turn to know which ones are new;
  the tracker the store just read carries that number already, so the store
  remembers it (and counts as before for a tracker it did not read).  Turns of
  one conversation never overlap (the lock store), so the number is exact.
* **A SQLite tracker store uses write-ahead logging** (`journal_mode=WAL`,
  `synchronous=NORMAL`): readers never wait for a writer, and a commit no
  longer waits for the disk twice.  A power cut can lose the last turns
  written, never the database.  PostgreSQL is left as configured.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import weakref
from typing import Any, Callable, Dict, Optional, Text, Tuple

import sqlalchemy as sa
from jsonschema import exceptions, validators
from jsonschema.protocols import Validator
from rasa.core.actions.action import RemoteAction
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.trackers import DialogueStateTracker

_ACTION_RESULT_HINT = (". Failed to validate Action server response from API, make sure your response from the "
                       f"Action endpoint is valid. For more information about the format visit "
                       f"{DOCS_BASE_URL}/custom-actions")

_validator: Optional[Validator] = None


def action_result_validator() -> Validator:
    """The validator for action-server responses, built (and its schema checked) on first use."""
    global _validator
    if _validator is None:
        schema = RemoteAction.action_response_format_spec()
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
        _validator = cls(schema)
    return _validator


def validate_action_result(_action: RemoteAction, result: Dict[Text, Any]) -> bool:
    """`RemoteAction._validate_action_result`, with the validator built once."""
    error = exceptions.best_match(action_result_validator().iter_errors(result))
    if error is not None:
        error.message += _ACTION_RESULT_HINT
        raise error
    return True


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
        rows = store._event_query(session, sender_id, fetch_events_from_all_sessions=all_sessions).all()
        events = [json.loads(row.data) for row in rows]
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
            rows.append(store.SQLEvent(
                sender_id=tracker.sender_id, type_name=event.type_name, timestamp=data.get("timestamp"),
                intent_name=(data.get("parse_data") or {}).get("intent", {}).get("name"),
                action_name=data.get("name"), data=json.dumps(data)))
        if rows:
            session.add_all(rows)
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


_original_init: Optional[Callable[..., None]] = None


def _init(store: SQLTrackerStore, *args: Any, **kwargs: Any) -> None:
    assert _original_init is not None
    _original_init(store, *args, **kwargs)
    if store.engine.dialect.name == "sqlite":
        sa.event.listen(store.engine, "connect", _sqlite_pragmas)
        with store.engine.connect() as connection:  # the journal mode stays with the file
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")


def install() -> None:
    """Apply the changes to this process's Rasa classes (idempotent)."""
    global _original_init
    RemoteAction._validate_action_result = validate_action_result
    if _original_init is None:
        _original_init = SQLTrackerStore.__init__
    SQLTrackerStore._retrieve = _retrieve
    SQLTrackerStore.save = _save
    SQLTrackerStore.__init__ = _init
