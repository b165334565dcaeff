"""The shared engines of the scaled-out layout, for one benchmark run: PostgreSQL, Redis and RabbitMQ.

README.md's "Running scaled out" describes the layout: the shop's store and
Rasa's tracker store on PostgreSQL, the project's atomic Redis lock store, a
RabbitMQ event broker, and one endpoints file every Rasa replica reads with
its `${NAME}` placeholders filled from the process environment.  Here that
layout is made for one run and taken away afterwards: `Scratch` creates two
fresh databases and picks a lock-key prefix, a queue and an exchange of its
own, gives the endpoints file and the environment that point the servers at
them, and removes all of it in `remove`.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import unquote, urlsplit

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/1"
DEFAULT_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"
CONNECT_TIMEOUT_S = 5

#: The endpoints file every replica reads, as README.md's `endpoints.scaled.yml`.
ENDPOINTS = """\
action_endpoint:
  url: ${ACTION_ENDPOINT_URL}
  headers:
    Authorization: Bearer ${ACTION_SERVER_TOKEN}

tracker_store:
  type: SQL
  dialect: postgresql
  url: ${TRACKER_DB_HOST}
  port: ${TRACKER_DB_PORT}
  db: ${TRACKER_DB_NAME}
  username: ${TRACKER_DB_USER}
  password: ${TRACKER_DB_PASSWORD}

lock_store:
  type: bot.serving.lock_store.AtomicRedisLockStore
  url: ${REDIS_HOST}
  port: ${REDIS_PORT}
  db: ${REDIS_DB}
  password: ${REDIS_PASSWORD}
  key_prefix: ${REDIS_KEY_PREFIX}

event_broker:
  type: pika
  url: ${RABBITMQ_HOST}
  port: ${RABBITMQ_PORT}
  username: ${RABBITMQ_USER}
  password: ${RABBITMQ_PASSWORD}
  exchange_name: ${RABBITMQ_EXCHANGE}
  queues:
    - ${RABBITMQ_QUEUE}
"""


class EngineError(Exception):
    """An engine cannot be reached or used; the message names it and says what to do."""


def shown(url: str) -> str:
    """`url` without its password, for messages and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{netloc[2]}").geturl()


@dataclass(frozen=True)
class Engines:
    """Where the three engines are: the command line's URLs."""

    postgres: str = DEFAULT_POSTGRES
    redis: str = DEFAULT_REDIS
    rabbitmq: str = DEFAULT_RABBITMQ

    def as_dict(self) -> Dict[str, str]:
        return {"postgres": shown(self.postgres), "redis": shown(self.redis), "rabbitmq": shown(self.rabbitmq)}


# --- talking to the engines ------------------------------------------------------------

def _postgres_admin(url: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(url, future=True, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S})


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S)


def _postgres_ping(url: str) -> None:
    from sqlalchemy import text

    with _postgres_admin(url).connect() as conn:
        conn.execute(text("select 1"))


def _redis_ping(url: str) -> None:
    client = _redis(url)
    try:
        client.ping()
    finally:
        client.close()


def _rabbitmq_ping(url: str) -> None:
    async def ping() -> None:
        import aio_pika

        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
        await connection.close()

    asyncio.run(ping())


def check(engines: Engines) -> None:
    """Raise `EngineError` naming every engine that cannot be reached, with its option and the way to skip."""
    checks: Tuple[Tuple[str, str, str, str, Callable[[str], None]], ...] = (
        ("PostgreSQL", engines.postgres, "the tracker store and the shop's store", "--postgres-url", _postgres_ping),
        ("Redis", engines.redis, "the lock store", "--redis-url", _redis_ping),
        ("RabbitMQ", engines.rabbitmq, "the event broker", "--rabbitmq-url", _rabbitmq_ping),
    )
    problems = []
    for name, url, role, option, ping in checks:
        try:
            ping(url)
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            reason = (str(exc).strip().splitlines() or [""])[0][:160]
            problems.append(f"{name} at {shown(url)} is not reachable ({exc.__class__.__name__}: {reason}); "
                            f"the scaled-out comparison needs it as {role} ({option}).")
    if problems:
        raise EngineError("\n".join(problems) + "\nStart it (or point the option at a running one), or leave the "
                          "scaled-out comparison out with --no-scaled-out (make bench BENCH_ARGS=--no-scaled-out).")


# --- one run's databases, lock keys, queue and exchange ------------------------------------

@dataclass
class Scratch:
    """The engine objects of one run, named so they cannot meet another run's, and removed after it.

    `created` lists the databases made so far, so `remove` drops exactly
    those; the lock keys (`<prefix>:*`), the queue and the exchange are
    removed whether or not anything made them.
    """

    engines: Engines
    run: str = field(default_factory=lambda: secrets.token_hex(5))
    created: List[str] = field(default_factory=list)

    @property
    def lock_prefix(self) -> str:
        return f"wismobench{self.run}"  # Rasa allows letters and digits only

    @property
    def queue(self) -> str:
        return f"wismo-bench-{self.run}"

    @property
    def exchange(self) -> str:
        return f"wismo-bench-{self.run}"

    def new_database(self, purpose: str) -> str:
        """Create an empty database on the PostgreSQL server; its URL."""
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = f"wismo_bench_{self.run}_{purpose}"
        try:
            with _postgres_admin(self.engines.postgres).connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:  # noqa: BLE001 - the message says which engine and why
            raise EngineError(f"Cannot create database {name} on PostgreSQL at {shown(self.engines.postgres)} "
                              f"({exc.__class__.__name__}: {str(exc).strip()[:200]}); the user in --postgres-url "
                              "needs CREATEDB.") from None
        self.created.append(name)
        return make_url(self.engines.postgres).set(database=name).render_as_string(hide_password=False)

    def environment(self, tracker_url: str) -> Dict[str, str]:
        """The variables `ENDPOINTS` reads, for the tracker store at `tracker_url` and this run's Redis and RabbitMQ."""
        tracker = urlsplit(tracker_url)
        redis_at = urlsplit(self.engines.redis)
        amqp_at = urlsplit(self.engines.rabbitmq)
        return {
            "TRACKER_DB_HOST": tracker.hostname or "127.0.0.1",
            "TRACKER_DB_PORT": str(tracker.port or 5432),
            "TRACKER_DB_NAME": tracker.path.lstrip("/"),
            "TRACKER_DB_USER": unquote(tracker.username or "postgres"),
            "TRACKER_DB_PASSWORD": unquote(tracker.password or ""),
            "REDIS_HOST": redis_at.hostname or "127.0.0.1",
            "REDIS_PORT": str(redis_at.port or 6379),
            "REDIS_DB": redis_at.path.strip("/") or "0",
            "REDIS_PASSWORD": unquote(redis_at.password or ""),
            "REDIS_KEY_PREFIX": self.lock_prefix,
            "RABBITMQ_HOST": amqp_at.hostname or "127.0.0.1",
            "RABBITMQ_PORT": str(amqp_at.port or 5672),
            "RABBITMQ_USER": unquote(amqp_at.username or "guest"),
            "RABBITMQ_PASSWORD": unquote(amqp_at.password or "guest"),
            "RABBITMQ_QUEUE": self.queue,
            "RABBITMQ_EXCHANGE": self.exchange,
        }

    def write_endpoints(self, path: Path) -> Path:
        path.write_text(ENDPOINTS)
        return path

    def remove(self) -> List[str]:
        """Drop the databases, delete the lock keys, the queue and the exchange; what could not be removed.

        Each is tried whatever happened to the others; a failure is
        returned as a sentence saying what is left behind, not raised.
        """
        left: List[str] = []
        try:
            self._drop_databases()
        except Exception as exc:  # noqa: BLE001 - reported, the rest is still removed
            left.append(f"PostgreSQL databases {', '.join(self.created)} at {shown(self.engines.postgres)} "
                        f"({exc.__class__.__name__}: {str(exc).strip()[:160]})")
        try:
            self._delete_lock_keys()
        except Exception as exc:  # noqa: BLE001
            left.append(f"Redis keys {self.lock_prefix}:* at {shown(self.engines.redis)} ({exc.__class__.__name__})")
        try:
            asyncio.run(self._delete_broker_objects())
        except Exception as exc:  # noqa: BLE001
            left.append(f"RabbitMQ queue and exchange {self.queue} at {shown(self.engines.rabbitmq)} "
                        f"({exc.__class__.__name__})")
        return left

    def _drop_databases(self) -> None:
        from sqlalchemy import text

        if not self.created:
            return
        with _postgres_admin(self.engines.postgres).connect() as conn:
            for name in list(self.created):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                self.created.remove(name)

    def _delete_lock_keys(self) -> None:
        client = _redis(self.engines.redis)
        try:
            keys = list(client.scan_iter(match=f"{self.lock_prefix}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    async def _delete_broker_objects(self) -> None:
        import aio_pika

        connection = await aio_pika.connect(self.engines.rabbitmq, timeout=CONNECT_TIMEOUT_S)
        try:
            channel = await connection.channel()
            await channel.queue_delete(self.queue)
            await channel.exchange_delete(self.exchange)
        finally:
            await connection.close()
