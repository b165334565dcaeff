"""The agent console as `python -m bot run` starts it, on loopback, against the real assistant.

Logins and their refusals, the API's rules for bad requests, two agents racing
for one conversation, a WhatsApp shopper talking to an agent and back to the
bot (replies arriving at the fake Graph API), and a restart in the middle of a
hand-off that keeps the queue, the claim, the login and the transcript.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import httpx
import pytest
from sqlalchemy import update

from bot.console import accounts
from bot.serving.runner import port_in_use
from bot.store import db
from bot.store.models import AgentSession

from .conftest import ACTION_TOKEN
from .helpers.servers import MODEL, ROOT, Server, free_port
from .helpers.shopper import rest_say
from .helpers.waits import wait_until
from .test_messenger import Shopper as MessengerShopper
from .test_messenger import wait_for_message
from .test_whatsapp import Shopper as WhatsAppShopper

PASSWORD = "a long enough passphrase"
ASK_FOR_A_PERSON = "I want to talk to a real person"
#: The response the assistant greets with when an agent hands back (domain.yml).
BACK_WITH_BOT = "You're back with the order assistant"
#: A turn of the real assistant on a busy machine.
TURN_S = 60


def new_username(prefix: str = "agent") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_agent(database_url: str, name: str, password: str = PASSWORD) -> str:
    """An agent account straight in the store; returns the username."""
    username = new_username(name.split()[0].lower())
    engine = db.make_engine(database_url)
    try:
        with db.session_scope(engine) as session:
            accounts.create_agent(session=session, username=username, display_name=name, password=password)
    finally:
        engine.dispose()
    return username


class Console:
    """One agent's browser, as far as the API is concerned: a cookie jar and JSON requests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        return self.http.post("/api/login", json={"username": username, "password": password})

    def logged_in(self, username: str, password: str = PASSWORD) -> Console:
        answer = self.login(username, password)
        assert answer.status_code == 200, answer.text
        return self

    def post(self, path: str, body: Optional[Dict[str, Any]] = None) -> httpx.Response:
        return self.http.post(path, json={} if body is None else body)

    def queue(self) -> List[Dict[str, Any]]:
        answer = self.http.get("/api/queue")
        assert answer.status_code == 200, answer.text
        return answer.json()["handoffs"]

    def waiting_for(self, conversation_id: str, timeout: float = TURN_S) -> Dict[str, Any]:
        """The open handoff of `conversation_id`, once the assistant has created it."""
        return wait_until(lambda: next((h for h in self.queue() if h["conversation_id"] == conversation_id), None),
                          what=f"a handoff for {conversation_id}", timeout=timeout, every=0.2)

    def detail(self, handoff_id: int) -> Dict[str, Any]:
        answer = self.http.get(f"/api/handoffs/{handoff_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()["handoff"]

    def sees(self, handoff_id: int, line: Dict[str, Any], timeout: float = 15) -> List[Dict[str, Any]]:
        """Wait until the transcript has a line with these fields; returns the transcript."""
        def check() -> Optional[List[Dict[str, Any]]]:
            lines = self.detail(handoff_id)["transcript"] or []
            return lines if any(all(found.get(k) == v for k, v in line.items()) for found in lines) else None

        return wait_until(check, what=f"{line} in the transcript", timeout=timeout, every=0.2)


@pytest.fixture
def console(assistant) -> Iterator[Console]:
    client = Console(assistant["console_url"])
    yield client
    client.close()


@pytest.fixture
def agent(assistant) -> str:
    return make_agent(assistant["database_url"], "Alex Jansen")


# --- the process and the command line -------------------------------------------------------


def test_run_starts_the_console_and_the_banner_says_where(assistant):
    """`python -m bot run` starts the console as a third process and prints its address."""
    port = assistant["env"]["CONSOLE_PORT"]
    banner = "".join(assistant["output"])
    assert f"Agent console:    http://localhost:{port}/" in banner
    assert httpx.get(f"{assistant['console_url']}/health", timeout=10).json() == {"status": "ok"}


def test_create_agent_from_the_command_line(assistant):
    """The password comes from stdin; duplicates and short passwords are refused with a clear message."""
    username = new_username("cli")

    def create(name: str, password: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot", "create-agent", name, "--name", "Casey Cli",
                               "--password-stdin"], cwd=ROOT, env=assistant["env"], input=password + "\n",
                              capture_output=True, text=True, timeout=60)

    made = create(username, PASSWORD)
    assert made.returncode == 0 and f"Agent {username} (Casey Cli) created" in made.stdout, made.stderr
    again = create(username.upper(), PASSWORD)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    short = create(new_username("cli"), "too short")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    client = Console(assistant["console_url"])
    try:
        assert client.login(username).json()["agent"] == {"id": client.login(username).json()["agent"]["id"],
                                                          "username": username, "name": "Casey Cli"}
    finally:
        client.close()


# --- logging in and out --------------------------------------------------------------------


def test_a_wrong_password_is_refused_like_an_unknown_name(console, agent):
    """401 with the same words either way, and no cookie."""
    for username, password in ((agent, PASSWORD + "x"), ("nobody-" + agent, PASSWORD), (agent, "")):
        answer = console.login(username, password)
        assert answer.status_code in (400, 401)
        assert "set-cookie" not in answer.headers
    assert console.login(agent, "wrong password").json() == {"error": "Wrong username or password."}
    assert console.login("nobody-" + agent, PASSWORD).json() == {"error": "Wrong username or password."}
    assert console.http.get("/api/queue").status_code == 401


def test_a_login_is_an_httponly_strict_cookie(console, agent, assistant):
    """The right password gives a cookie scripts cannot read and other sites cannot send."""
    answer = console.login(agent.upper())
    assert answer.status_code == 200 and answer.json()["agent"]["name"] == "Alex Jansen"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert f"Max-Age={8 * 3600}" in cookie
    assert console.http.get("/").status_code == 200
    assert console.http.get("/login").headers["location"] == "/"  # already logged in


PAGES = ["/"]
API_GETS = ["/api/me", "/api/queue", "/api/handoffs/1"]
API_POSTS = ["/api/logout", "/api/handoffs/1/claim", "/api/handoffs/1/reply", "/api/handoffs/1/resolve",
             "/api/handoffs/1/hand-back"]


def refused_everywhere(client: httpx.Client) -> None:
    for path in PAGES:
        answer = client.get(path)
        assert (answer.status_code, answer.headers.get("location")) == (302, "/login"), path
    for path in API_GETS:
        assert client.get(path).status_code == 401, path
    for path in API_POSTS:
        answer = client.post(path, json={"text": "hello"})
        assert answer.status_code == 401 and answer.json()["error"], path


def test_pages_and_apis_refuse_requests_without_a_login(console):
    """No cookie, or a made-up one: pages redirect to the login page, the API says 401."""
    refused_everywhere(console.http)
    console.http.cookies.set("wismo_agent", "A" * 43)
    refused_everywhere(console.http)
    assert console.http.get("/login").status_code == 200
    assert console.http.get("/health").status_code == 200


def test_an_expired_login_is_refused(console, agent, assistant):
    """Past AGENT_SESSION_HOURS the cookie is worth nothing, and the console clears it."""
    console.logged_in(agent)
    assert console.http.get("/api/queue").status_code == 200
    engine = db.make_engine(assistant["database_url"])
    token = console.http.cookies["wismo_agent"]
    with db.session_scope(engine) as session:
        session.execute(update(AgentSession).where(AgentSession.token_hash == accounts.token_hash(token))
                        .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    engine.dispose()
    page = console.http.get("/")
    assert page.status_code == 302 and "Max-Age=0" in page.headers["set-cookie"]
    console.http.cookies.set("wismo_agent", token)
    refused_everywhere(console.http)


def test_logging_out_ends_the_login_at_once(console, agent):
    """After logout the same cookie, replayed, opens nothing."""
    console.logged_in(agent)
    token = console.http.cookies["wismo_agent"]
    answer = console.post("/api/logout")
    assert answer.status_code == 200 and "Max-Age=0" in answer.headers["set-cookie"]
    console.http.cookies.set("wismo_agent", token)
    refused_everywhere(console.http)


def test_posts_need_json_from_the_consoles_own_pages(console, agent):
    """Form posts, other sites' pages, broken or oversized bodies and unknown ids get a 4xx with a reason."""
    console.logged_in(agent)
    cases = [
        ({"content": "text=hi", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415),
        ({"content": "{}", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": {}, "headers": {"Origin": "https://evil.example"}}, 403),
        ({"json": {}, "headers": {"Sec-Fetch-Site": "cross-site"}}, 403),
        ({"content": "{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ({"json": ["a", "list"]}, 400),
        ({"content": "{}" + " " * 70_000, "headers": {"Content-Type": "application/json"}}, 413),
    ]
    for request, status in cases:
        answer = console.http.post("/api/handoffs/1/claim", **request)
        assert answer.status_code == status, (request.get("headers"), answer.text)
        assert answer.json()["error"]
    assert console.post("/api/handoffs/999999/claim").status_code == 404
    assert console.post("/api/handoffs/99999999999999/claim").status_code == 404
    assert console.post("/api/handoffs/abc/claim").status_code == 404
    assert console.http.get("/api/handoffs/999999").status_code == 404
    assert console.http.delete("/api/queue").status_code == 405
    assert console.http.get("/assets/app.py").status_code == 404
    assert console.http.post("/api/login", json={"username": ["x"], "password": 5}).status_code == 400


def test_pages_forbid_framing_and_inline_script(console):
    """The login page is served with a strict CSP and may not be framed."""
    page = console.http.get("/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text


# --- the queue --------------------------------------------------------------------------------


def test_two_agents_cannot_claim_the_same_conversation(assistant, console, agent):
    """Both click Claim at once: one gets it, the other hears who did; only the holder may act on it."""
    sender = f"race-{uuid.uuid4().hex[:8]}"
    rest_say(assistant["url"], sender, ASK_FOR_A_PERSON)
    console.logged_in(agent)
    other = Console(assistant["console_url"]).logged_in(make_agent(assistant["database_url"], "Sam Vos"))
    try:
        handoff = console.waiting_for(f"rest:{sender}")
        assert handoff["state"] == "queued" and handoff["reason"] == "asked" and handoff["channel"] == "rest"
        start, answers = threading.Barrier(2), {}

        def click(name: str, client: Console) -> None:
            start.wait()
            answers[name] = client.post(f"/api/handoffs/{handoff['id']}/claim")

        threads = [threading.Thread(target=click, args=pair) for pair in (("alex", console), ("sam", other))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        statuses = sorted(answer.status_code for answer in answers.values())
        assert statuses == [200, 409], {k: v.text for k, v in answers.items()}
        winner = "alex" if answers["alex"].status_code == 200 else "sam"
        holder, loser = (console, other) if winner == "alex" else (other, console)
        holder_name = "Alex Jansen" if winner == "alex" else "Sam Vos"
        assert f"{holder_name} claimed this conversation first" in answers["sam" if winner == "alex" else "alex"].text
        for action, body in (("reply", {"text": "I'll take it"}), ("resolve", {}), ("hand-back", {})):
            refused = loser.post(f"/api/handoffs/{handoff['id']}/{action}", body)
            assert refused.status_code == 403 and holder_name in refused.json()["error"], action
        assert [h["agent_name"] for h in loser.queue() if h["id"] == handoff["id"]] == [holder_name]
        assert holder.post(f"/api/handoffs/{handoff['id']}/resolve").status_code == 200
        assert all(h["id"] != handoff["id"] for h in loser.queue())
    finally:
        other.close()


def test_a_reply_needs_a_claim_and_sensible_text(assistant, console, agent):
    """Unclaimed conversations take no replies; empty or overlong text is refused with the reason."""
    sender = f"text-{uuid.uuid4().hex[:8]}"
    rest_say(assistant["url"], sender, ASK_FOR_A_PERSON)
    console.logged_in(agent)
    handoff = console.waiting_for(f"rest:{sender}")
    path = f"/api/handoffs/{handoff['id']}"
    assert console.post(f"{path}/reply", {"text": "hello"}).json() == {"error": "Claim this conversation first."}
    assert console.post(f"{path}/claim").status_code == 200
    assert console.post(f"{path}/reply", {"text": "   "}).status_code == 400
    assert console.post(f"{path}/reply", {}).status_code == 400
    assert console.post(f"{path}/reply", {"text": 42}).status_code == 400
    too_long = console.post(f"{path}/reply", {"text": "x" * 2001})
    assert too_long.status_code == 400 and "2000" in too_long.json()["error"]
    assert console.post(f"{path}/resolve", {"text": "Sorted, thanks for waiting!"}).status_code == 200
    assert console.post(f"{path}/resolve").status_code == 409  # a second click
    lines = console.detail(handoff["id"])["transcript"]
    assert lines[-2:] == [
        {"from": "agent", "agent": "Alex Jansen", "text": "Sorted, thanks for waiting!", "at": lines[-2]["at"]},
        {"from": "system", "text": "The assistant answers again.", "at": lines[-1]["at"]},
    ]
    assert rest_say(assistant["url"], sender, "where is my order?")  # resolved: the assistant answers again


# --- a whole hand-off over WhatsApp ---------------------------------------------------------


def test_a_whatsapp_shopper_talks_to_an_agent_and_back_to_the_bot(assistant, fake_graph, console, agent):
    """Ask for a person; the agent claims and replies (delivered via the Graph API); the shopper answers
    (the bot stays silent, the agent sees it); hand back: the bot greets and answers again."""
    shopper = WhatsAppShopper(assistant, fake_graph)
    shopper.say(ASK_FOR_A_PERSON)
    shopper.expect("passed your conversation", timeout=TURN_S)
    console.logged_in(agent)
    handoff = console.waiting_for(f"whatsapp:{shopper.wa_id}")
    assert handoff["channel"] == "whatsapp" and handoff["state"] == "queued"
    before = console.detail(handoff["id"])
    assert before["paused"] is True and before["mine"] is False
    assert [line["text"] for line in before["transcript"] if line["from"] == "shopper"] == [ASK_FOR_A_PERSON]

    assert console.post(f"/api/handoffs/{handoff['id']}/claim").status_code == 200
    reply = "Hi, this is Alex from Wild Sparrow Home. Which order is it about?"
    sent = len(shopper.texts())
    assert console.post(f"/api/handoffs/{handoff['id']}/reply", {"text": reply}).json() == {"ok": True}
    assert shopper.expect(reply, since=sent, timeout=15) == [reply]
    delivery = fake_graph.received(lambda r: r["body"].get("text", {}).get("body") == reply)
    assert delivery[0]["path"].endswith("/messages")
    assert delivery[0]["headers"]["Authorization"] == "Bearer wa-access-token"

    sent = len(shopper.texts())
    shopper.say("It's the blue lamp, it hasn't arrived")
    transcript = console.sees(handoff["id"], {"from": "shopper", "text": "It's the blue lamp, it hasn't arrived"})
    assert {"from": "agent", "agent": "Alex Jansen", "text": reply} in [
        {k: line.get(k) for k in ("from", "agent", "text")} for line in transcript]

    back = console.post(f"/api/handoffs/{handoff['id']}/hand-back")
    assert back.status_code == 200 and back.json()["handoff"]["state"] == "returned"
    # The hand-back's greeting goes to the same conversation after the shopper's message was handled:
    # anything the bot had said to that message would have arrived before it.
    since_message = shopper.expect(BACK_WITH_BOT, since=sent, timeout=TURN_S)
    assert BACK_WITH_BOT in since_message[0], since_message  # paused: the bot said nothing to the shopper
    assert all(h["id"] != handoff["id"] for h in console.queue())
    assert console.detail(handoff["id"])["paused"] is False

    sent = len(shopper.texts())
    shopper.say("where is my order?")
    assert shopper.expect("order number", since=sent, timeout=TURN_S)


def test_a_messenger_shopper_gets_the_agents_reply_and_closing_line(assistant, fake_graph, console, agent):
    """On Messenger too the reply goes out through the Send API; resolving sends the closing line and
    gives the conversation back to the assistant without its greeting."""
    shopper = MessengerShopper(assistant, fake_graph)
    shopper.say(ASK_FOR_A_PERSON, expect="passed your conversation")
    console.logged_in(agent)
    handoff = console.waiting_for(f"messenger:{shopper.psid}")
    assert handoff["channel"] == "messenger"
    assert console.post(f"/api/handoffs/{handoff['id']}/claim").status_code == 200
    assert console.post(f"/api/handoffs/{handoff['id']}/reply", {"text": "Alex here, one moment"}).status_code == 200
    wait_for_message(fake_graph, shopper.psid, "Alex here, one moment", timeout=15)
    closing = "Your replacement ships tomorrow. Have a good day!"
    assert console.post(f"/api/handoffs/{handoff['id']}/resolve", {"text": closing}).status_code == 200
    sent = wait_for_message(fake_graph, shopper.psid, closing, timeout=15)
    assert not any(BACK_WITH_BOT in (m.get("text") or "") for m in sent)
    assert shopper.say("where is my order?", expect="order number")


# --- a restart in the middle of a hand-off --------------------------------------------------


class Assistant:
    """A `python -m bot run` of its own: a file SQLite store and a SQL tracker store, restartable."""

    def __init__(self, tmp: Path) -> None:
        endpoints = tmp / "endpoints.yml"
        endpoints.write_text("action_endpoint:\n  url: ${ACTION_ENDPOINT_URL}\n"
                             "  headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}\n"
                             f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tmp / 'tracker.db'}\n")
        self.env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'store.db'}", "RASA_PORT": str(free_port()),
                    "ACTION_PORT": str(free_port()), "CONSOLE_PORT": str(free_port()),
                    "RASA_AUTH_TOKEN": "restart-token", "ACTION_SERVER_TOKEN": ACTION_TOKEN,
                    "RASA_ENDPOINTS": str(endpoints), "AGENT_HOURS": "always"}
        for name in ("WHATSAPP_VERIFY_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_ACCESS_TOKEN",
                     "WHATSAPP_PHONE_NUMBER_ID", "MESSENGER_VERIFY_TOKEN", "MESSENGER_APP_SECRET",
                     "MESSENGER_PAGE_ACCESS_TOKEN"):
            self.env.pop(name, None)
        self.url = f"http://127.0.0.1:{self.env['RASA_PORT']}"
        self.console_url = f"http://127.0.0.1:{self.env['CONSOLE_PORT']}"
        self.database_url = self.env["DATABASE_URL"]
        subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=self.env, check=True,
                       capture_output=True)
        self.server = Server(env=self.env)

    def start(self) -> Assistant:
        self.server.start()
        return self

    def stop(self) -> Optional[int]:
        return self.server.stop()

    def ports(self) -> List[int]:
        return [int(self.env[name]) for name in ("RASA_PORT", "ACTION_PORT", "CONSOLE_PORT")]


@pytest.mark.slow
def test_a_restart_mid_handoff_keeps_the_queue_the_claim_the_login_and_the_transcript(tmp_path):
    """Hand off, claim, reply; Ctrl-C; start again: all still there, the bot still silent, hand-back works."""
    assert MODEL.is_file()
    bot = Assistant(tmp_path).start()
    waiting_sender, claimed_sender = f"w-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    client: Optional[Console] = None
    try:
        assert any("passed your conversation" in t for t in rest_say(bot.url, claimed_sender, ASK_FOR_A_PERSON))
        rest_say(bot.url, waiting_sender, ASK_FOR_A_PERSON)
        assert rest_say(bot.url, claimed_sender, "the parcel box was crushed") == []  # paused
        client = Console(bot.console_url).logged_in(make_agent(bot.database_url, "Robin de Wit"))
        handoff = client.waiting_for(f"rest:{claimed_sender}")
        assert client.post(f"/api/handoffs/{handoff['id']}/claim").status_code == 200
        answer = client.post(f"/api/handoffs/{handoff['id']}/reply", {"text": "I'm sorry, let me check"})
        assert answer.status_code == 200
        before = client.detail(handoff["id"])["transcript"]

        assert bot.stop() == 0
        assert not any(port_in_use(port) for port in bot.ports())
        bot.start()

        queue = {h["conversation_id"]: h for h in client.queue()}  # the old cookie still works
        assert queue[f"rest:{claimed_sender}"]["state"] == "claimed"
        assert queue[f"rest:{claimed_sender}"]["agent_name"] == "Robin de Wit"
        assert queue[f"rest:{waiting_sender}"]["state"] == "queued"
        after = client.detail(handoff["id"])
        assert after["mine"] and after["paused"] is True and after["transcript"] == before
        assert {"from": "shopper", "text": "the parcel box was crushed"} in [
            {k: line.get(k) for k in ("from", "text")} for line in after["transcript"]]
        assert rest_say(bot.url, claimed_sender, "hello? anyone?") == []  # still with a person

        assert client.post(f"/api/handoffs/{handoff['id']}/hand-back").status_code == 200
        assert any(BACK_WITH_BOT in line["text"] for line in client.detail(handoff["id"])["transcript"])
        assert any("order number" in text for text in rest_say(bot.url, claimed_sender, "where is my order?"))
    finally:
        if client is not None:
            client.close()
        bot.stop()


@pytest.mark.slow  # starts `python -m bot run` and `python -m bot console`
def test_a_busy_console_port_stops_start_up_with_the_setting_named(tmp_path):
    """`run` and `console` refuse a taken CONSOLE_PORT, start nothing and say which setting to change."""
    env = {**os.environ, "RASA_AUTH_TOKEN": "busy-port-token", "ACTION_SERVER_TOKEN": ACTION_TOKEN,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "RASA_PORT": str(free_port()),
           "ACTION_PORT": str(free_port()), "CONSOLE_PORT": str(free_port())}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env["CONSOLE_PORT"])))
        busy.listen()
        for command in ("run", "console"):
            result = subprocess.run([sys.executable, "-m", "bot", command], cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=60)
            assert result.returncode == 1, (command, result.stderr)
            assert f"Port {env['CONSOLE_PORT']} is already in use" in result.stderr
            assert "CONSOLE_PORT" in result.stderr and "Traceback" not in result.stderr
    assert not port_in_use(int(env["RASA_PORT"])) and not port_in_use(int(env["ACTION_PORT"]))
