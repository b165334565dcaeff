"""Start the action server, the Rasa server and the agent console together, and stop them together.

`make run` ends here.  The three run as child processes in their own
process groups; Ctrl-C (or SIGTERM) stops all of them, the Rasa server first
so that the turns it finishes still have the action server, and if one dies
the others are stopped too, so nothing is left holding a port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

import httpx

from bot.config import PROJECT_ROOT, Settings
from bot.serving.channels import effective_credentials, enabled_channels, write_credentials

STARTUP_TIMEOUT_S = 240.0
#: How long a child other than the Rasa server gets to stop before it is killed.
STOP_TIMEOUT_S = 15.0
#: How long the Rasa server gets: Meta's channels let running turns finish for up to
#: connectors.meta.DRAIN_TIMEOUT (15 s), then Sanic closes the remaining connections.
RASA_STOP_TIMEOUT_S = 25.0
#: Children stopped one after the other, before the rest, with the time each gets.
STOP_FIRST: Mapping[str, float] = {"rasa server": RASA_STOP_TIMEOUT_S}


class StartupError(Exception):
    """The assistant cannot start; the message says why and what to do."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on `port` (or holds it bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def latest_model(models_dir: Path) -> Path:
    models = sorted(models_dir.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not models:
        raise StartupError(f"No trained model in {models_dir}: run `make run` (it trains one) or `make train`.")
    return models[-1]


def run_root() -> Path:
    """Where a running assistant keeps its generated files (ignored by git)."""
    root = PROJECT_ROOT / ".run"
    root.mkdir(exist_ok=True)
    return root


def check_ports(settings: Settings) -> None:
    for name, port in (("RASA_PORT", settings.rasa_port), ("ACTION_PORT", settings.action_port),
                       ("CONSOLE_PORT", settings.console_port)):
        if port_in_use(port):
            raise StartupError(
                f"Port {port} is already in use, so the assistant cannot start there. "
                f"Stop whatever uses it (`lsof -i :{port}` shows it) or set {name} to another port in .env."
            )


def child_environment(settings: Settings) -> Dict[str, str]:
    env = dict(os.environ)
    env["ACTION_ENDPOINT_URL"] = settings.action_endpoint_url
    # endpoints.yml sends it to the action server; .env values are not in the environment otherwise.
    env["ACTION_SERVER_TOKEN"] = settings.action_server_token
    env.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def commands(settings: Settings, model: Path, credentials: Optional[Path] = None) -> Dict[str, List[str]]:
    """The servers' command lines; `credentials` is the effective channel file."""
    cors = [origin.strip() for origin in settings.rasa_cors_origins.split(",") if origin.strip()]
    return {
        "action server": [sys.executable, "-m", "bot.serving.action_server"],
        # The API token is added inside that process, from the settings: never on a command line.
        "rasa server": [
            sys.executable, "-m", "bot.serving.rasa_server", "run",
            "--model", str(model),
            "--endpoints", str(settings.path(settings.rasa_endpoints)),
            "--credentials", str(credentials or settings.path(settings.rasa_credentials)),
            "--interface", settings.rasa_host,
            "--port", str(settings.rasa_port),
            "--enable-api",
            *(["--cors", *cors] if cors else []),
        ],
        "agent console": [sys.executable, "-m", "bot", "console"],
    }


def _action_server_ready(settings: Settings) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{settings.action_port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _ready(settings: Settings) -> bool:
    try:
        action = httpx.get(f"http://127.0.0.1:{settings.action_port}/health", timeout=2)
        status = httpx.get(
            f"http://127.0.0.1:{settings.rasa_port}/status",
            params={"token": settings.rasa_auth_token},
            timeout=2,
        )
        console = httpx.get(f"http://127.0.0.1:{settings.console_port}/health", timeout=2)
    except httpx.HTTPError:
        return False
    return (action.status_code == 200 and console.status_code == 200 and status.status_code == 200
            and bool(status.json().get("model_file")))


def banner(settings: Settings, channels: Iterable[str] = ()) -> str:
    host = "localhost" if settings.rasa_host in ("127.0.0.1", "0.0.0.0") else settings.rasa_host
    base = f"http://{host}:{settings.rasa_port}"
    lines = [
        "",
        f"  {settings.shop_name} order assistant is ready.",
    ]
    if "widget" in channels:
        lines.append(f"  Demo shop page:   {base}/widget/   (the chat widget, embedded)")
    if "rest" in channels:
        auth = ' -H "Authorization: Bearer $REST_TOKEN"' if settings.rest_token else ""
        rest = f"curl -s {base}/webhooks/rest/webhook{auth} -d '{{\"sender\": \"me\", \"message\": \"hi\"}}'"
        lines.append(f"  Chat over REST:   {rest}")
    if "whatsapp" in channels:
        lines.append(f"  WhatsApp webhook: {base}/webhooks/whatsapp/webhook")
    if "messenger" in channels:
        lines.append(f"  Messenger webhook: {base}/webhooks/messenger/webhook")
    return "\n".join(
        lines + [
            f"  Rasa HTTP API:    {base}/status?token=<RASA_AUTH_TOKEN>",
            f"  Action server:    http://localhost:{settings.action_port}/health",
            f"  Agent console:    http://{host}:{settings.console_port}/   "
            "(add agents: .venv/bin/python -m bot create-agent USERNAME --name \"Display Name\")",
            "  Demo orders:      .venv/bin/python -m bot demo-orders",
            "  Stop with Ctrl-C.",
            "",
        ]
    )


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_together(processes: Iterable[subprocess.Popen], timeout: float) -> None:
    """SIGTERM to each process group, SIGKILL to those still there after `timeout` seconds."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def stop_processes(processes: Dict[str, subprocess.Popen], timeout: float = STOP_TIMEOUT_S, *,
                   first: Mapping[str, float] = STOP_FIRST) -> None:
    """Stop the children: those named in `first` one by one, each within its own time, then the rest together.

    The Rasa server goes first and is waited for: on SIGTERM it stops taking
    webhooks and finishes the turns it is running, and those turns still call
    the action server, which must therefore outlive it.  Each gets SIGTERM to
    its process group, and SIGKILL when it is still there after its time
    (`timeout` for the rest).
    """
    for name, budget in first.items():
        process = processes.get(name)
        if process is not None:
            _stop_together([process], budget)
    _stop_together([process for name, process in processes.items() if name not in first], timeout)


def check_secrets(settings: Settings) -> None:
    """Refuse to start without the two tokens, or with an endpoints file that would not send one."""
    missing = [name for name, value in (("RASA_AUTH_TOKEN", settings.rasa_auth_token),
                                        ("ACTION_SERVER_TOKEN", settings.action_server_token)) if not value.strip()]
    if missing:
        raise StartupError(f"{' and '.join(missing)} not set: run `python -m bot setup` (or `make run`), which "
                           "writes random ones to .env.")
    endpoints = settings.path(settings.rasa_endpoints)
    if endpoints.is_file() and action_authorization(endpoints, child_environment(settings)) \
            != f"Bearer {settings.action_server_token}":
        header = "headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}"
        raise StartupError(f"{endpoints} does not send the action server token, so every action would be refused. "
                           f"Under action_endpoint add (unquoted: Rasa fills in ${{...}} only in plain values):"
                           f"\n  {header}")


def action_authorization(endpoints: Path, env: Dict[str, str]) -> Optional[str]:
    """The Authorization header the Rasa server will send the action server, read as Rasa reads the file."""
    from rasa.shared.exceptions import RasaException
    from rasa.shared.utils.io import read_config_file

    saved = dict(os.environ)
    os.environ.update(env)  # Rasa fills ${...} from the environment its server will have
    try:
        config = read_config_file(str(endpoints))
    except (RasaException, ValueError, OSError):
        return None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    action = config.get("action_endpoint") if isinstance(config, dict) else None
    headers = action.get("headers") if isinstance(action, dict) else None
    value = headers.get("Authorization") if isinstance(headers, dict) else None
    return str(value) if value is not None else None


def serve(settings: Settings, model: Optional[Path] = None) -> int:
    """Run the servers and the console until interrupted; returns the exit code."""
    check_secrets(settings)
    check_ports(settings)
    model = model or latest_model(PROJECT_ROOT / "models")
    run_dir = Path(tempfile.mkdtemp(prefix=f"rasa-{settings.rasa_port}-", dir=run_root()))
    try:
        credentials = write_credentials(settings, run_dir)
    except ValueError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise StartupError(str(exc)) from None
    channels = enabled_channels(effective_credentials(settings))
    env = child_environment(settings)
    processes: Dict[str, subprocess.Popen] = {}
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, argv in commands(settings, model, credentials).items():
            processes[name] = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, start_new_session=True)
        print(f"Starting the action server (port {settings.action_port}), Rasa (port {settings.rasa_port}) "
              f"with {model.name} and the agent console (port {settings.console_port}) ...", flush=True)
        started = time.monotonic()
        ready = False
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"The {name} stopped (exit code {process.returncode}); stopping the rest.", file=sys.stderr)
                    return process.returncode or 1
            if not ready:
                if _ready(settings):
                    ready = True
                    print(banner(settings, channels), flush=True)
                elif time.monotonic() - started > STARTUP_TIMEOUT_S:
                    print(f"The servers did not become ready within {STARTUP_TIMEOUT_S:.0f} s.", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        print("Stopping ...", flush=True)
        return 0
    finally:
        stop_processes(processes)
        shutil.rmtree(run_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def shell(settings: Settings, model: Optional[Path] = None) -> int:
    """Chat in the terminal: the action server in the background, `rasa shell` in front."""
    check_secrets(settings)
    if port_in_use(settings.action_port):
        raise StartupError(f"Port {settings.action_port} is already in use; set ACTION_PORT to another port in .env.")
    model = model or latest_model(PROJECT_ROOT / "models")
    env = child_environment(settings)
    argv = commands(settings, model)["action server"]
    action = {"action server": subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, start_new_session=True)}
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _action_server_ready(settings):
            if action["action server"].poll() is not None or time.monotonic() > deadline:
                raise StartupError("The action server did not start; see the messages above.")
            time.sleep(0.5)
        rasa = [str(Path(sys.executable).parent / "rasa"), "shell", "--model", str(model),
                "--endpoints", str(settings.path(settings.rasa_endpoints))]
        return subprocess.call(rasa, cwd=PROJECT_ROOT, env=env)
    finally:
        stop_processes(action)
