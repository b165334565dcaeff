"""The one place actions get their settings, store sessions and clock from.

rasa-sdk builds every action once, with no arguments, so the context cannot be
passed to a constructor: actions call :func:`context`, which builds it from the
environment on first use, and tests install their own with :func:`use_context`.

Store work goes through :meth:`ActionContext.store`: the function runs in one
transaction on a worker thread, so a slow query never stalls the action
server's event loop (and with it every other conversation).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from bot.config import Settings, get_settings
from bot.domain.clock import utcnow
from bot.store import db

T = TypeVar("T")


@dataclass(frozen=True)
class ActionContext:
    """Settings, a session factory and a clock: everything an action needs from outside."""

    settings: Settings
    sessions: sessionmaker
    clock: Callable[[], dt.datetime] = field(default=utcnow)

    def now(self) -> dt.datetime:
        return self.clock()

    def today(self) -> dt.date:
        """Today in the shop's time zone."""
        return self.now().astimezone(self.settings.tz).date()

    async def store(self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one transaction (committed on success, rolled back on error), off the event loop.

        `work` must return plain data or objects it has fully loaded: the
        session is closed when the result reaches the caller.
        """
        return await asyncio.to_thread(self._transaction, work)

    def _transaction(self, work: Callable[[Session], T]) -> T:
        with self.sessions() as session, session.begin():
            return work(session)

    @classmethod
    def from_settings(cls, settings: Settings) -> ActionContext:
        return cls(settings=settings, sessions=db.session_factory(db.make_engine(settings.database_url)))


_current: Optional[ActionContext] = None
_lock = threading.Lock()


def context() -> ActionContext:
    """The action server's context, built from the settings on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = ActionContext.from_settings(get_settings())
        return _current


@contextmanager
def use_context(replacement: ActionContext) -> Iterator[ActionContext]:
    """Run actions with `replacement` (tests); the previous context comes back afterwards."""
    global _current
    with _lock:
        previous, _current = _current, replacement
    try:
        yield replacement
    finally:
        with _lock:
            _current = previous
