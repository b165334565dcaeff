"""The console's failed-login limit, kept in the store: parallel requests, two console processes, many addresses.

Each test runs `python -m bot console` processes (two of them, sharing one
store) on loopback, on SQLite and on PostgreSQL, and logs in over real HTTP.
Requests come from different loopback addresses (127.0.0.x) where the
address matters.  A 401 means the password was checked and was wrong; a 429
means it was refused without a check.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import uuid
from typing import Dict, Iterator, List, Optional

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bot.console import accounts
from bot.console.app import LOGIN_WINDOW_S, MAX_LOGIN_FAILURES, MAX_LOGIN_FAILURES_PER_ADDRESS, TOO_MANY_ATTEMPTS
from bot.store import db
from bot.store.models import LoginAttempt

from .helpers.servers import ROOT, Server, free_port
from .helpers.waits import wait_for

#: Every test here starts `python -m bot console` processes.
pytestmark = pytest.mark.slow

PASSWORD = "a long enough passphrase"
WRONG = "not the passphrase at all"


class Console:
    """One `python -m bot console` process on a free port."""

    def __init__(self, database_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"DATABASE_URL": database_url, "CONSOLE_PORT": str(self.port), "RASA_PORT": str(free_port()),
               "ACTION_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
        self.server = Server([sys.executable, "-m", "bot", "console"], env={**_base_env(), **env},
                             name=f"the console on {self.port}", ready=self.healthy, cwd=ROOT)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        return self.server.text()


def _base_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CONSOLE_", "RASA_", "ACTION_"))}


@pytest.fixture(scope="module")
def consoles(migrated_engine: Engine) -> Iterator[List[Console]]:
    """Two console processes sharing one store (emptied after each test by the `engine` fixture)."""
    url = migrated_engine.url.render_as_string(hide_password=False)
    started = [Console(url), Console(url)]
    try:
        for console in started:
            console.server.start(timeout=60)
        yield started
    finally:
        for console in started:
            console.server.stop()


def make_agent(engine: Engine, password: str = PASSWORD) -> str:
    username = f"agent-{uuid.uuid4().hex[:8]}"
    with db.session_scope(engine) as session:
        accounts.create_agent(session=session, username=username, display_name="Alex Jansen", password=password)
    return username


def client(console: Console, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client whose connections come from `address` (any 127.x.y.z is this machine on Linux)."""
    return httpx.AsyncClient(base_url=console.url, timeout=60,
                             transport=httpx.AsyncHTTPTransport(local_address=address))


async def login(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await http.post("/api/login", json={"username": username, "password": password})


def statuses(answers: List[httpx.Response]) -> List[int]:
    return [answer.status_code for answer in answers]


def assert_limited(answer: httpx.Response) -> None:
    """A 429 that says why and when to come back, and no login."""
    assert answer.status_code == 429, answer.text
    assert answer.json() == {"error": TOO_MANY_ATTEMPTS}
    assert 1 <= int(answer.headers["retry-after"]) <= LOGIN_WINDOW_S
    assert "set-cookie" not in answer.headers


async def fill_up(http: httpx.AsyncClient, username: str, most: int = 2 * MAX_LOGIN_FAILURES) -> List[int]:
    """Wrong passwords one after another until one is refused; the statuses."""
    seen: List[int] = []
    while len(seen) < most:
        seen.append((await login(http, username, WRONG)).status_code)
        if seen[-1] == 429:
            break
    return seen


def rows(engine: Engine, key: Optional[str] = None) -> int:
    with db.session_scope(engine) as session:
        query = select(func.count()).select_from(LoginAttempt)
        if key is not None:
            query = query.where(LoginAttempt.key == key)
        return int(session.scalar(query) or 0)


# --- the tests ----------------------------------------------------------------------------------


async def test_parallel_wrong_passwords_get_at_most_the_limit_checked(engine, consoles):
    """25 wrong passwords at once: no more than MAX_LOGIN_FAILURES are checked, and then even the right one waits."""
    username = make_agent(engine)
    async with client(consoles[0]) as http:
        burst = await asyncio.gather(*(login(http, username, WRONG) for _ in range(25)))
        checked = statuses(burst).count(401)
        assert set(statuses(burst)) <= {401, 429}, [a.text for a in burst]
        assert checked <= MAX_LOGIN_FAILURES, f"{checked} passwords were checked: {statuses(burst)}"
        for answer in burst:
            if answer.status_code == 429:
                assert_limited(answer)
        # Attempts refused during the burst do not count: wrong ones are checked until the limit is reached.
        more = await fill_up(http, username)
        assert checked + more.count(401) == MAX_LOGIN_FAILURES and more[-1] == 429, (statuses(burst), more)
        assert_limited(await login(http, username, PASSWORD))
        assert_limited(await login(http, username.upper(), PASSWORD))


async def test_the_limit_holds_across_two_console_processes(engine, consoles):
    """Misses in one console count in the other; the right password waits in both."""
    username = make_agent(engine)
    first, second = consoles
    async with client(first) as one, client(second) as two:
        answers = []
        for turn in range(MAX_LOGIN_FAILURES):
            answers.append((await login(one if turn % 2 else two, username, WRONG)).status_code)
        assert answers == [401] * MAX_LOGIN_FAILURES
        assert_limited(await login(one, username, WRONG))
        assert_limited(await login(two, username, PASSWORD))
        assert_limited(await login(one, username, PASSWORD))
        # Both at once again, from both processes: still nothing checked.
        burst = await asyncio.gather(*(login(http, username, WRONG) for http in (one, two) for _ in range(5)))
        assert statuses(burst) == [429] * 10


async def test_a_login_in_one_console_clears_the_count_in_the_other(engine, consoles):
    """Nine misses, then the right password in the other console: the agent starts again from nothing."""
    username = make_agent(engine)
    first, second = consoles
    async with client(first) as one, client(second) as two:
        for _ in range(MAX_LOGIN_FAILURES - 1):
            assert (await login(one, username, WRONG)).status_code == 401
        assert (await login(two, username, PASSWORD)).status_code == 200
        assert await fill_up(one, username) == [401] * MAX_LOGIN_FAILURES + [429]


async def test_the_username_limit_holds_whatever_the_address(engine, consoles):
    """One wrong password from each of ten addresses: the eleventh address, with the right password, waits."""
    username = make_agent(engine)
    for n in range(MAX_LOGIN_FAILURES):
        async with client(consoles[n % 2], f"127.0.0.{10 + n}") as http:
            assert (await login(http, username, WRONG)).status_code == 401
    async with client(consoles[0], "127.0.0.99") as http:
        assert_limited(await login(http, username, PASSWORD))


async def test_the_address_limit_holds_across_usernames(engine, consoles):
    """One address trying one password on many usernames is stopped; the same agent elsewhere is not."""
    agent = make_agent(engine)
    typed = [f"guess-{uuid.uuid4().hex[:10]}" for _ in range(MAX_LOGIN_FAILURES_PER_ADDRESS + 1)]
    async with client(consoles[0], "127.0.0.3") as one, client(consoles[1], "127.0.0.3") as two:
        # Every username once, from both processes at once, all from one address.
        half = MAX_LOGIN_FAILURES_PER_ADDRESS // 2
        first = await asyncio.gather(*(login(one, name, WRONG) for name in typed[:half]),
                                     *(login(two, name, WRONG) for name in typed[half:MAX_LOGIN_FAILURES_PER_ADDRESS]))
        assert statuses(first) == [401] * MAX_LOGIN_FAILURES_PER_ADDRESS
        unknown = await login(one, typed[-1], WRONG)
        assert_limited(unknown)
        known = await login(two, agent, PASSWORD)  # a real agent with the right password, same address
        assert_limited(known)
        assert (known.json(), known.status_code) == (unknown.json(), unknown.status_code)
    async with client(consoles[1], "127.0.0.4") as elsewhere:
        assert (await login(elsewhere, agent, PASSWORD)).status_code == 200
    # Nothing typed as a username that is not an agent's reaches the console's log.
    logs = await wait_for(lambda: next((text for text in [consoles[0].output() + consoles[1].output()]
                                    if "a failed login for an unknown username from 127.0.0.3" in text), None),
                          what="the console's log of a failed login", timeout=10)
    assert not [name for name in typed if name in logs]


async def test_attempts_older_than_the_window_neither_count_nor_stay(engine, consoles):
    """Forty misses sixteen minutes ago: a login now is checked, and those rows are gone."""
    username = make_agent(engine)
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=LOGIN_WINDOW_S + 60)
    with db.session_scope(engine) as session:
        for key in (f"user:{username}", "addr:127.0.0.1", "user:someone-else"):
            session.add_all(LoginAttempt(key=key, succeeded=False, created_at=old) for _ in range(40))
    async with client(consoles[0]) as http:
        assert (await login(http, username, WRONG)).status_code == 401
        assert rows(engine, "user:someone-else") == 0 and rows(engine, f"user:{username}") == 1
        assert (await login(http, username, PASSWORD)).status_code == 200
    with db.session_scope(engine) as session:
        kept = session.execute(select(LoginAttempt.key, LoginAttempt.succeeded).order_by(LoginAttempt.id)).all()
    # Recorded per username and per address; the success marks the username's attempts, and its own address row.
    assert [tuple(row) for row in kept] == [(f"user:{username}", True), ("addr:127.0.0.1", False),
                                            (f"user:{username}", True), ("addr:127.0.0.1", True)]


async def test_what_is_typed_as_a_username_is_not_stored(engine, consoles):
    """Attempts on names that are no agent's are counted under a digest: a password typed there stays out."""
    typed = "Correct-Horse-Battery-Staple-9"
    async with client(consoles[0]) as http:
        assert (await login(http, typed, WRONG)).status_code == 401
    with db.session_scope(engine) as session:
        keys = list(session.scalars(select(LoginAttempt.key)))
    assert len(keys) == 2 and "addr:127.0.0.1" in keys
    assert not [key for key in keys if typed.lower() in key.lower()]
