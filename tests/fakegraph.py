"""A stand-in for Meta's Graph API on loopback: records what the assistant sends.

It is a real HTTP server in a thread, so the connectors' httpx clients, their
timeouts and retries are exercised exactly as against graph.facebook.com.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple


class FakeGraph:
    """Records every POST; `fail_next(n)` answers the next n requests with a 500, `hold(...)` slowly."""

    def __init__(self) -> None:
        self.requests: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._failures = 0
        #: (which requests, seconds, set when one arrived), each used once.
        self._holds: List[Tuple[Callable[[Dict[str, Any]], bool], float, threading.Event]] = []
        graph = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                request = {"path": self.path, "headers": dict(self.headers), "body": body}
                with graph._lock:
                    failing = graph._failures > 0
                    if failing:
                        graph._failures -= 1
                    graph.requests.append({**request, "failed": failing})
                    held = next((hold for hold in graph._holds if hold[0](request)), None)
                    if held is not None:
                        graph._holds.remove(held)
                if held is not None:
                    held[2].set()
                    time.sleep(held[1])  # the sender waits, as for a slow Graph API
                if failing:
                    self._reply(500, {"error": {"message": "temporary failure", "code": 2}})
                else:
                    self._reply(200, {"messaging_product": "whatsapp", "message_id": "mid.fake",
                                      "messages": [{"id": f"wamid.fake{len(graph.requests)}"}]})

            def _reply(self, status: int, payload: Dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v21.0"

    def start(self) -> FakeGraph:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures = count

    def hold(self, where: Callable[[Dict[str, Any]], bool], seconds: float) -> threading.Event:
        """Answer the next request matching `where` only after `seconds`; the event is set when it arrives.

        The request counts as received when it arrives, as a message Meta got
        counts as sent: a test slows a turn down at a known point with it.
        """
        arrived = threading.Event()
        with self._lock:
            self._holds.append((where, seconds, arrived))
        return arrived

    def received(self, where: Optional[Callable[[Dict[str, Any]], bool]] = None) -> List[Dict[str, Any]]:
        """Successfully answered requests, optionally filtered."""
        with self._lock:
            found = [r for r in self.requests if not r["failed"]]
        return [r for r in found if where is None or where(r)]

    def wait_for(self, where: Callable[[Dict[str, Any]], bool], count: int = 1,
                 timeout: float = 60.0) -> List[Dict[str, Any]]:
        """Wait until at least `count` answered requests match; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.received(where)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)
