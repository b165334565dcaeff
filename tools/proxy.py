"""A small round-robin HTTP proxy, as a load balancer in front of Rasa replicas would be.

`make bench` puts it between its shoppers and the replicas of the scaled-out
comparison: each request goes to the next upstream in turn, whatever
conversation it belongs to, so any message of a conversation may land on any
replica.
It forwards the method, path, query string, body and end-to-end headers, and
sends back the upstream's status, headers and body unchanged (still
compressed, when the upstream compressed them).  Connections to the upstreams
are kept open and reused.

An upstream that cannot be reached, or does not answer in time, is not
retried elsewhere: the shopper gets 502 (504 for a timeout), and the proxy
counts it, so a replica that fails shows up in the figures as errors.

Both the one-replica and the two-replica side go through it (the first with
one upstream), so both pay the same proxy cost.
"""

from __future__ import annotations

import itertools
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import httpx
from aiohttp import web
from multidict import CIMultiDict

#: Headers that describe one connection, not the message: never forwarded (RFC 9110, section 7.6.1).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "transfer-encoding", "upgrade"})
#: Headers the sending side sets again for its own connection.
RECOMPUTED = frozenset({"host", "content-length"})
DEFAULT_TIMEOUT_S = 60.0
#: Upstream connections kept open, over all upstreams: far more than the shoppers a bench sends at once.
MAX_CONNECTIONS = 512


def forwarded_headers(headers: Iterable[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The end-to-end headers of a message, repeated ones kept, in order.

    Headers named in a `Connection` header are hop-by-hop too, and dropped
    with the standard ones.
    """
    pairs = list(headers)
    named = {token.strip().lower() for name, value in pairs if name.lower() == "connection"
             for token in value.split(",")}
    dropped = HOP_BY_HOP | RECOMPUTED | named
    return [(name, value) for name, value in pairs if name.lower() not in dropped]


class RoundRobinProxy:
    """An HTTP server on loopback that sends each request to the next upstream in turn.

    `forwarded` counts the requests each upstream answered (any status),
    `failed` those it did not (unreachable or too slow); the keys are the
    upstream URLs.  Use it as an async context manager, or call `start` and
    `close`.
    """

    def __init__(self, upstreams: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        """`upstreams`: base URLs such as ``http://127.0.0.1:5005``; `port` 0 lets the kernel pick one."""
        if not upstreams:
            raise ValueError("a proxy needs at least one upstream")
        self.upstreams = [url.rstrip("/") for url in upstreams]
        self.timeout_s, self.host, self.port = timeout_s, host, port
        self.forwarded: Dict[str, int] = dict.fromkeys(self.upstreams, 0)
        self.failed: Dict[str, int] = dict.fromkeys(self.upstreams, 0)
        self._next = itertools.cycle(self.upstreams)
        self._client: Optional[httpx.AsyncClient] = None
        self._runner: Optional[web.AppRunner] = None

    @property
    def url(self) -> str:
        """Where the proxy listens, once started."""
        if self._runner is None:
            raise RuntimeError("the proxy is not started")
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def start(self) -> RoundRobinProxy:
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s, connect=10.0), limits=limits)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> RoundRobinProxy:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def counts(self) -> Dict[str, Dict[str, int]]:
        """A copy of the counters, to compare before and after a measurement."""
        return {"forwarded": dict(self.forwarded), "failed": dict(self.failed)}

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        upstream = next(self._next)
        headers = forwarded_headers(request.headers.items())
        if request.remote:
            headers.append(("X-Forwarded-For", request.remote))
        outgoing = self._client.build_request(request.method, upstream + request.raw_path, headers=headers,
                                              content=await request.read() or None)
        try:
            answer = await self._client.send(outgoing, stream=True)
            try:
                body = b"".join([chunk async for chunk in answer.aiter_raw()])
            finally:
                await answer.aclose()
        except httpx.TimeoutException:
            self.failed[upstream] += 1
            return web.Response(status=504, text=f"{upstream} did not answer within {self.timeout_s:g} s\n")
        except httpx.TransportError as exc:
            self.failed[upstream] += 1
            return web.Response(status=502, text=f"{upstream} is not reachable ({exc.__class__.__name__})\n")
        self.forwarded[upstream] += 1
        return web.Response(status=answer.status_code, body=body,
                            headers=CIMultiDict(forwarded_headers(answer.headers.multi_items())))
