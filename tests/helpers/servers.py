"""Servers in child processes: `python -m bot run` or any other command, started until ready, stopped with Ctrl-C.

Every test that needs a real server goes through :class:`Server`: it starts
the command with the environment it is given, collects what the process
prints (stdout and stderr, line by line) in a thread, waits until the process
says it is ready (by default a line containing "is ready", which is how the
runner's banner ends) and fails with the last output when the process dies
first or a deadline passes.  It is stopped as a person stops it, with SIGINT,
and killed only when it does not stop in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "wismo.tar.gz"
#: `python -m bot run`: the action server, Rasa and the agent console.
BOT_RUN = (sys.executable, "-m", "bot", "run")
#: Rasa loads its model in half a minute on a quiet machine; far longer while other tests run.
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0

#: Channel secrets the suite's assistant runs with (test values, not real ones).
CHANNEL_ENV = {
    "WHATSAPP_VERIFY_TOKEN": "wa-verify-token",
    "WHATSAPP_APP_SECRET": "wa-app-secret",
    "WHATSAPP_ACCESS_TOKEN": "wa-access-token",
    "WHATSAPP_PHONE_NUMBER_ID": "1098765432",
    "MESSENGER_VERIFY_TOKEN": "fb-verify-token",
    "MESSENGER_APP_SECRET": "fb-app-secret",
    "MESSENGER_PAGE_ACCESS_TOKEN": "fb-page-token",
}


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One child process, what it printed, and how to wait for it and stop it.

    `ready` says when the process is ready: a piece of text to find in a line
    of its output, or a function (an HTTP probe, say) that returns something
    truthy once it is.  A server can be started again after it was stopped;
    `output` then holds the lines of the new run only.
    """

    def __init__(self, argv: Sequence[str] = BOT_RUN, *, env: Mapping[str, str], name: str = "the assistant",
                 ready: Union[str, Callable[[], Any]] = "is ready", cwd: Path = ROOT,
                 own_session: bool = False) -> None:
        self.argv, self.env, self.name, self.ready, self.cwd = list(argv), dict(env), name, ready, cwd
        #: A process group of its own, killed as a whole when the process does not stop in time.
        self.own_session = own_session
        self.process: Optional[subprocess.Popen] = None
        self.output: List[str] = []
        self._reader: Optional[threading.Thread] = None

    # --- starting -----------------------------------------------------------------------------

    def launch(self) -> Server:
        """Start the process and the thread that reads its output; does not wait."""
        assert not self.running, f"{self.name} is already running"
        self.output = []
        self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, text=True, errors="replace",
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=self.own_session)
        output, stream = self.output, self.process.stdout
        self._reader = threading.Thread(target=lambda: output.extend(iter(stream.readline, "")), daemon=True,
                                        name=f"output of {self.name}")
        self._reader.start()
        return self

    def is_ready(self) -> bool:
        if callable(self.ready):
            return bool(self.ready())
        return any(self.ready in line for line in list(self.output))

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> Server:
        """Wait until the process is ready; stop it and fail with its last output if it dies or takes too long."""
        assert self.process is not None, f"{self.name} was not started"
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            problem = None
            if self.process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(5)  # the last lines it printed
                problem = f"{self.name} stopped (exit code {self.process.returncode}) before it was ready"
            elif time.monotonic() > deadline:
                problem = f"{self.name} was not ready after {timeout:.0f} s"
            if problem:
                self.stop()
                raise AssertionError(f"{problem}; its last output:\n{self.tail()}")
            time.sleep(0.2)
        return self

    def start(self, timeout: float = START_TIMEOUT_S) -> Server:
        """Start the process and wait until it is ready."""
        return self.launch().wait_ready(timeout)

    # --- looking at it ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def text(self) -> str:
        """Everything the current run printed so far."""
        return "".join(list(self.output))

    def tail(self, chars: int = 3000) -> str:
        return self.text()[-chars:]

    def check_alive(self) -> None:
        code = self.process.returncode if self.process is not None else None
        assert self.running, f"{self.name} stopped (exit code {code}):\n{self.tail()}"

    # --- stopping -----------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> Optional[int]:
        """Ctrl-C, then wait; kill only if it does not stop within `timeout`.  Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if self.own_session:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                self.process.kill()
            self.process.wait()
        if self._reader is not None:
            self._reader.join(5)
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
