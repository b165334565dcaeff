"""A Redis lock store whose ticket changes are atomic, so several Rasa replicas can share it.

Rasa's ``RedisLockStore`` changes a conversation's ticket lock by reading it,
changing it in Python and writing it back.  Within one Rasa process that is
safe (the calls do not interleave), but two replicas doing it at the same
moment overwrite each other: both get the same ticket and run their turns
side by side, or one's finished ticket is written back and the other waits
for it to expire (a minute), or a waiting ticket is dropped and its message
fails with a ``LockError``.  Here every read-change-write is one Redis
transaction (``WATCH``/``MULTI``, retried when another replica changed the
lock in between), so tickets are issued and retired in one order for all
replicas.  Keys, values and settings are the same as Rasa's, so the two can
replace each other with nothing to migrate.

Use it in endpoints.yml as ``type: bot.serving.lock_store.AtomicRedisLockStore`` with
the same keys as ``type: redis`` (url, port, db, password, key_prefix, ...).
"""

from __future__ import annotations

import json
from typing import Any, Callable, List, Optional, Text, Tuple, TypeVar

from rasa.core.lock import TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, LockError, RedisLockStore
from rasa.utils.endpoints import EndpointConfig

T = TypeVar("T")


class AtomicRedisLockStore(RedisLockStore):
    """Rasa's Redis lock store with each change to a lock made in one transaction."""

    def __init__(self, endpoint_config: Optional[EndpointConfig] = None, **kwargs: Any) -> None:
        """Connect as ``type: redis`` would.

        Args:
            endpoint_config: The ``lock_store`` section of endpoints.yml (Rasa
                passes it this way to lock stores named by module path); its
                ``url`` is the Redis host and its other keys are
                ``RedisLockStore``'s arguments.
            **kwargs: ``RedisLockStore``'s arguments, when built directly.
        """
        if endpoint_config is not None:
            kwargs = {"host": endpoint_config.url or "localhost", **endpoint_config.kwargs, **kwargs}
        super().__init__(**kwargs)

    def _change(self, conversation_id: Text,
                change: Callable[[Optional[TicketLock]], Tuple[Optional[TicketLock], T]]) -> T:
        """Apply `change` to the stored lock atomically; a returned lock without tickets is deleted.

        ``change`` may run more than once: when another replica writes the
        lock between the read and the write, the transaction is retried on
        the fresh value.
        """
        key = self.key_prefix + conversation_id
        outcome: List[T] = []

        def attempt(pipe: Any) -> None:
            stored = pipe.get(key)
            lock = TicketLock.from_dict(json.loads(stored)) if stored else None
            changed, value = change(lock)
            outcome[:] = [value]
            pipe.multi()
            if changed is None or not changed.tickets:
                pipe.delete(key)
            else:
                pipe.set(key, changed.dumps())

        self.red.transaction(attempt, key)
        return outcome[0]

    def issue_ticket(self, conversation_id: Text, lock_lifetime: float = LOCK_LIFETIME) -> int:
        """The next ticket for the conversation, numbered after every ticket any replica holds."""

        def issue(lock: Optional[TicketLock]) -> Tuple[Optional[TicketLock], int]:
            lock = lock or self.create_lock(conversation_id)
            return lock, lock.issue_ticket(lock_lifetime)

        try:
            return self._change(conversation_id, issue)
        except Exception as exc:  # the caller expects Rasa's LockError, as from the base class
            raise LockError(f"Error while acquiring lock. Error:\n{exc}") from exc

    def update_lock(self, conversation_id: Text) -> None:
        """Drop expired tickets, without writing back a lock another replica changed meanwhile."""

        def prune(lock: Optional[TicketLock]) -> Tuple[Optional[TicketLock], None]:
            if lock is not None:
                lock.remove_expired_tickets()
            return lock, None

        self._change(conversation_id, prune)

    def finish_serving(self, conversation_id: Text, ticket_number: int) -> None:
        """Retire one ticket, keeping the others exactly as they are now."""

        def retire(lock: Optional[TicketLock]) -> Tuple[Optional[TicketLock], None]:
            if lock is not None:
                lock.remove_ticket_for(ticket_number)
            return lock, None

        self._change(conversation_id, retire)

    def cleanup(self, conversation_id: Text, ticket_number: int) -> None:
        """Retire the ticket and delete the lock in the same step when no ticket is left.

        Rasa's version checks for waiting tickets and deletes in separate
        calls, which can delete a ticket another replica has just been issued.
        """
        self.finish_serving(conversation_id, ticket_number)
