"""Shared fixtures: a fresh store on SQLite and on the real PostgreSQL server, and the running assistant.

Store tests take the `engine` fixture and run once per backend.  PostgreSQL is
the server named by TEST_POSTGRES_URL (default: the local one); each test run
creates its own databases there and drops them afterwards.  When that server
cannot be reached the PostgreSQL variants are skipped, with the reason shown.

Tests that need the running assistant, the fake Graph API or a browser take the
fixtures at the end; they are marked `slow` (`pytest -m "not slow"` skips them).
What the tests share besides fixtures is in `tests/helpers/`.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from bot.config import Settings, load_settings
from bot.store import db
from bot.store.demo import seed_demo
from bot.store.models import Base

from .helpers.servers import CHANNEL_ENV, MODEL, ROOT, Server, free_port

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
#: The action server token the suite's servers run with.
ACTION_TOKEN = "suite-action-server-token-0123456789abcdef"
# A Wednesday afternoon in the shop's time zone: every demo timeline is relative to it.
NOW = dt.datetime(2026, 11, 18, 14, 30, tzinfo=dt.timezone.utc)
BACKENDS = ("sqlite", "postgresql")


def pg_admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL") or load_settings_env("TEST_POSTGRES_URL") or DEFAULT_PG


def load_settings_env(name: str) -> str:
    from dotenv import dotenv_values

    env_file = ROOT / ".env"
    return (dotenv_values(env_file).get(name) or "") if env_file.is_file() else ""


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Defaults, whatever the developer's .env says, so results do not depend on it."""
    return load_settings(environ={}, env_file=Path("/nonexistent"))


class _Databases:
    """Creates and drops throw-away databases on one backend."""

    def __init__(self, backend: str, tmp: Path):
        self.backend, self.tmp, self.created = backend, tmp, []
        if backend == "postgresql":
            admin = db.make_engine(pg_admin_url()).execution_options(isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(text("select 1"))
            except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
                pytest.skip(f"PostgreSQL at {pg_admin_url()} is not reachable: {exc.__class__.__name__}")
            self.admin = admin

    def new_url(self) -> str:
        name = f"wismo_test_{uuid.uuid4().hex[:10]}"
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp / (name + '.db')}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.backend == "postgresql":
            with self.admin.connect() as conn:
                for name in self.created:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            self.admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def databases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Databases]:
    dbs = _Databases(request.param, tmp_path_factory.mktemp(request.param))
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def migrated_engine(databases: _Databases) -> Iterator[Engine]:
    engine = db.make_engine(databases.new_url())
    db.migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(migrated_engine: Engine) -> Iterator[Engine]:
    """A migrated, empty store; emptied again after the test."""
    yield migrated_engine
    with migrated_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with db.session_factory(engine)() as session:
        yield session


@pytest.fixture(scope="session")
def demo_engine(databases: _Databases, settings: Settings) -> Iterator[Engine]:
    """A store seeded with the demo shop as of NOW; tests must not change it."""
    engine = db.make_engine(databases.new_url())
    db.migrate(engine)
    with db.session_scope(engine) as session:
        seed_demo(session=session, settings=settings, now=NOW)
    yield engine
    engine.dispose()


@pytest.fixture
def demo_session(demo_engine: Engine) -> Iterator[Session]:
    with db.session_factory(demo_engine)() as session:
        yield session
        session.rollback()


@pytest.fixture(scope="module")
def shop(databases: _Databases, settings: Settings) -> Iterator[Dict[str, Any]]:
    """A demo shop seeded for the real today, which the actions use (their context is set to it)."""
    from actions.context import ActionContext, use_context
    from bot.store.demo import showcase

    engine = db.make_engine(databases.new_url())
    db.migrate(engine)
    with db.session_scope(engine) as session:
        seed_demo(session=session, settings=settings, now=dt.datetime.now(dt.timezone.utc))
    with db.session_factory(engine)() as session:
        orders = {r["scenario"]: r for r in showcase(session=session, settings=settings,
                                                      now=dt.datetime.now(dt.timezone.utc))}
    with use_context(ActionContext(settings=settings, sessions=db.session_factory(engine))):
        yield {"engine": engine, "orders": orders, "settings": settings}
    engine.dispose()


# --- slow tests -----------------------------------------------------------------------

#: Fixtures that start servers, subprocesses or a browser: a test that uses one is marked `slow`
#: (`-m "not slow"` leaves it out).  `echo` is test_widget's server process, `cluster` test_scaled_out's
#: replicas.  Tests that start such things themselves, or load the trained model, are marked where they are.
SLOW_FIXTURES = frozenset({"assistant", "browser", "fake_graph", "echo", "cluster"})


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- the running assistant ------------------------------------------------------------

#: Debian's Chromium, driven by Playwright (`make test` installs it when missing).
CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

@pytest.fixture
async def browser():
    """Headless Chromium, closed after the test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="session")
def fake_graph():
    """Meta's Graph API, faked on loopback; both Meta channels send to it."""
    from .fakegraph import FakeGraph

    graph = FakeGraph().start()
    yield graph
    graph.stop()


@pytest.fixture(scope="session")
def assistant(tmp_path_factory, fake_graph):
    """`python -m bot run` on free ports, every channel on, a freshly seeded store, the agent console beside it.

    One for the whole suite: starting Rasa costs half a minute.  Tests talk to it
    with their own conversation ids, so they do not disturb each other.
    """
    import json
    import subprocess
    import sys

    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    tmp = tmp_path_factory.mktemp("assistant")
    endpoints = tmp / "endpoints.yml"
    endpoints.write_text("action_endpoint:\n  url: ${ACTION_ENDPOINT_URL}\n"
                         "  headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}\n")
    env = {**os.environ, **CHANNEL_ENV,
           "DATABASE_URL": f"sqlite:///{tmp / 'store.db'}", "RASA_PORT": str(free_port()),
           "ACTION_PORT": str(free_port()), "CONSOLE_PORT": str(free_port()), "RASA_AUTH_TOKEN": "conv-token",
           "ACTION_SERVER_TOKEN": ACTION_TOKEN,
           "RASA_ENDPOINTS": str(endpoints),
           "WHATSAPP_API_BASE_URL": fake_graph.url, "MESSENGER_API_BASE_URL": fake_graph.url,
           # No tracking feed here (test_updates_live.py runs its own assistant with both feeds on).
           "AFTERSHIP_WEBHOOK_SECRET": ""}
    subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=env, check=True, capture_output=True)
    listed = subprocess.run([sys.executable, "-m", "bot", "demo-orders", "--json"], cwd=ROOT, env=env, check=True,
                            capture_output=True, text=True)
    with Server(env=env).start() as server:
        yield {"url": f"http://127.0.0.1:{env['RASA_PORT']}",
               "orders": {r["scenario"]: r for r in json.loads(listed.stdout)},
               "token": "conv-token", "env": env, "output": server.output, "database_url": env["DATABASE_URL"],
               "console_url": f"http://127.0.0.1:{env['CONSOLE_PORT']}"}
