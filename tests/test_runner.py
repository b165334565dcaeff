"""`python -m bot run`: both servers start, answer, refuse a busy port and stop cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest

from bot.serving.runner import port_in_use

from .conftest import ACTION_TOKEN
from .helpers.servers import MODEL, ROOT, Server, free_port
from .helpers.shopper import rest_messages

#: Every test here starts `python -m bot` in a subprocess.
pytestmark = pytest.mark.slow


@pytest.fixture
def run_env(tmp_path):
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("action_endpoint:\n  url: ${ACTION_ENDPOINT_URL}\n"
                         "  headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}\n")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "RASA_PORT": str(free_port()),
           "ACTION_PORT": str(free_port()), "CONSOLE_PORT": str(free_port()), "RASA_AUTH_TOKEN": "test-token-123",
           "ACTION_SERVER_TOKEN": ACTION_TOKEN, "RASA_ENDPOINTS": str(endpoints)}
    subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=env, check=True, capture_output=True)
    return env


def test_a_busy_port_is_a_clear_error(run_env):
    """When the Rasa port is taken, the command names the port and the setting, and starts nothing."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(run_env["RASA_PORT"])))
        busy.listen()
        result = subprocess.run([sys.executable, "-m", "bot", "run"], cwd=ROOT, env=run_env, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1
    assert f"Port {run_env['RASA_PORT']} is already in use" in result.stderr
    assert "RASA_PORT" in result.stderr and "Traceback" not in result.stderr
    assert not port_in_use(int(run_env["ACTION_PORT"]))


def test_run_answers_hi_on_rest_protects_the_api_and_stops_on_ctrl_c(run_env):
    """The servers come up, greet on the REST channel, guard the HTTP API, and Ctrl-C stops both."""
    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    rasa_port, action_port = int(run_env["RASA_PORT"]), int(run_env["ACTION_PORT"])
    server = Server(env=run_env).start()
    try:
        assert f"http://localhost:{rasa_port}/webhooks/rest/webhook" in server.text()

        base = f"http://127.0.0.1:{rasa_port}"
        assert rest_messages(base, "t1", "hi")[0]["text"].startswith("Hi!")
        assert httpx.get(f"{base}/status", timeout=10).status_code == 401
        assert httpx.get(f"{base}/status", params={"token": "wrong"}, timeout=10).status_code == 401
        assert httpx.get(f"{base}/status", params={"token": "test-token-123"}, timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{action_port}/health", timeout=10).status_code == 200
    finally:
        code = server.stop()
    assert code == 0
    assert not port_in_use(rasa_port) and not port_in_use(action_port)
