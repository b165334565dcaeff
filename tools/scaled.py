"""The scaled-out part of `make bench`: one Rasa replica against two, on PostgreSQL, Redis and RabbitMQ.

The servers are started the way README.md's "Running scaled out" tells a
shop: one action server (`python -m bot.serving.action_server`) and two Rasa
replicas (`python -m bot.serving.rasa_server run --model ... --endpoints ...
--credentials ... --enable-api`), all sharing a fresh PostgreSQL store seeded
with the demo orders (`python -m bot setup`), a PostgreSQL tracker store, the
project's atomic Redis lock store and a RabbitMQ event broker (`tools.engines`).

The shoppers talk to a round-robin proxy in this process (`tools.proxy`),
which sends each request to the next replica in turn, whatever conversation
it belongs to, so the replicas share every conversation through the tracker
and lock stores.  The one-replica side goes through
the same kind of proxy with one upstream (the second replica idles), so both
sides pay the same proxy cost.  Both sides get the same conversations, the
same reply checks and the same throughput measurement as the single-machine
part, level after level, taking turns; the server CPU counted is that of both
replicas and the action server (the engines' own is not counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import httpx

from bot.config import PROJECT_ROOT
from bot.serving.runner import RASA_STOP_TIMEOUT_S, StartupError, latest_model, stop_processes
from tools import bench
from tools.bench import BenchError, Plan, Target
from tools.engines import Engines, Scratch, check
from tools.proxy import RoundRobinProxy

#: The replicas, by the names the report gives them.
REPLICAS = ("A", "B")
#: The two sides of the comparison: key, label, how many replicas the proxy sends to.
SIDES: Tuple[Tuple[str, str, int], ...] = (("one", "one replica", 1), ("two", "two replicas", 2))
DESCRIPTION = ("One action server (`python -m bot.serving.action_server`) and two Rasa replicas "
               "(`python -m bot.serving.rasa_server run`) sharing a fresh PostgreSQL store with the demo orders, "
               "a PostgreSQL tracker store, the atomic Redis lock store and a RabbitMQ event broker, behind a "
               "round-robin proxy in the load generator's process; one replica: the proxy sends every request "
               "to replica A (B idles); two replicas: to A and B in turn, request by request, whatever "
               "conversation it belongs to.")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored for a while, so a second Ctrl-C does not leave databases behind."""
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Cluster(bench.Processes):
    """The scaled-out layout on one machine, for one run; stopped and removed on exit, whatever happens.

    The replicas stop first (finishing their turns, which still call the
    action server), then the action server; then the run's databases, lock
    keys, queue and exchange go.
    """

    def __init__(self, engines: Engines, model: Path) -> None:
        super().__init__("bench-scaled-")
        self.engines, self.model = engines, model
        self.scratch = Scratch(engines)
        self.token = secrets.token_hex(16)
        self.replicas: List[Target] = []
        self.action_url = ""

    def start(self) -> List[Target]:
        """Make the databases, start the servers, seed the store while the replicas load; the replicas (not ready).

        The same endpoints file and environment for all, as on separate
        machines: only the ports differ.
        """
        store_url = self.scratch.new_database("store")
        tracker_url = self.scratch.new_database("tracker")
        action_port, *ports = bench.free_ports(1 + len(REPLICAS))
        self.action_url = f"http://127.0.0.1:{action_port}"
        endpoints = self.scratch.write_endpoints(self.dir / "endpoints.yml")
        credentials = self.dir / "credentials.yml"
        credentials.write_text("connectors.rest.RestInput:\n")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
               "DATABASE_URL": store_url, "ACTION_HOST": "127.0.0.1",
               "ACTION_PORT": str(action_port), "ACTION_ENDPOINT_URL": f"{self.action_url}/webhook",
               "ACTION_SERVER_TOKEN": secrets.token_hex(16), "RASA_AUTH_TOKEN": self.token,
               "RASA_TELEMETRY_ENABLED": "false", **self.scratch.environment(tracker_url)}
        self._spawn("action server", [sys.executable, "-m", "bot.serving.action_server"], env)
        urls = {}
        for name, port in zip(REPLICAS, ports):
            self._spawn(f"replica {name}", [
                sys.executable, "-m", "bot.serving.rasa_server", "run", "--model", str(self.model),
                "--endpoints", str(endpoints), "--credentials", str(credentials),
                "--interface", "127.0.0.1", "--port", str(port), "--enable-api"], env)
            urls[name] = f"http://127.0.0.1:{port}"
        for argv in (["setup"], ["demo-orders", "--json"]):
            done = subprocess.run([sys.executable, "-m", "bot", *argv], cwd=PROJECT_ROOT, env=env,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise BenchError(f"`python -m bot {' '.join(argv)}` on the PostgreSQL store failed:\n"
                                 f"{done.stdout}{done.stderr}")
        by_scenario = {row["scenario"]: row for row in json.loads(done.stdout)}
        orders = [by_scenario[s] for s in bench.STATUS_SCENARIOS if s in by_scenario]
        self.replicas = [Target(f"replica-{name.lower()}", url, orders, label=f"replica {name}", script="wismo",
                                info={"model": bench._relative(self.model)}) for name, url in urls.items()]
        return self.replicas

    def server_pids(self) -> List[int]:
        """The processes whose CPU the comparison counts: the replicas and the action server."""
        return [process.pid for process in self.processes.values()]

    async def wait_ready(self) -> None:
        """Until the action server answers and every replica has its model loaded; fails if a server stops."""
        deadline = time.monotonic() + bench.STARTUP_TIMEOUT_S
        waiting = ["action server", *(f"replica {name}" for name in REPLICAS)]
        async with httpx.AsyncClient(timeout=3.0) as client:
            while waiting:
                for name in waiting:
                    process = self.processes[name]
                    if process.poll() is not None:
                        raise BenchError(f"The scaled-out {name} stopped while starting "
                                         f"(exit code {process.returncode}):\n{self.log_tail(name)}")
                for name in list(waiting):
                    if await self._ready(client, name):
                        waiting.remove(name)
                if not waiting:
                    break
                if time.monotonic() > deadline:
                    were = "was" if len(waiting) == 1 else "were"
                    raise BenchError(f"The scaled-out {', '.join(waiting)} {were} not ready within "
                                     f"{bench.STARTUP_TIMEOUT_S:.0f} s:\n{self.log_tail(waiting[0])}")
                await asyncio.sleep(0.5)
            for replica in self.replicas:
                replica.info["rasa_version"] = (await client.get(f"{replica.url}/version")).json().get("version")

    async def _ready(self, client: httpx.AsyncClient, name: str) -> bool:
        try:
            if name == "action server":
                return (await client.get(f"{self.action_url}/health")).status_code == 200
            replica = self.replicas[REPLICAS.index(name.rpartition(" ")[2])]
            status = await client.get(f"{replica.url}/status", params={"token": self.token})
        except httpx.HTTPError:
            return False
        if status.status_code == 409:  # up, but the model did not load
            raise BenchError(f"The scaled-out {name} started without a model ({self.model}):\n{self.log_tail(name)}")
        return status.status_code == 200 and bool(status.json().get("model_file"))

    def stop(self) -> None:
        """The replicas together (each within Rasa's stop time), then the action server."""
        replicas = {name: process for name, process in self.processes.items() if name.startswith("replica")}
        stop_processes(replicas, timeout=RASA_STOP_TIMEOUT_S, first={})
        stop_processes({n: p for n, p in self.processes.items() if n not in replicas}, timeout=bench.STOP_TIMEOUT_S,
                       first={})

    def close(self) -> None:
        """Stop the servers, then remove the run's engine objects; what is left behind is said, with where."""
        with signals_held():
            self.stop()
            left = self.scratch.remove()
        for what in left:
            print(f"Could not remove {what}; remove it by hand.", file=sys.stderr)


async def warm_up(target: Target, conversations: int) -> Dict[str, object]:
    """`conversations` whole conversations with `target`, one after the other, not counted; their outcomes."""
    outcomes: List[List[object]] = []
    async with bench._client(1) as client:
        for number in range(conversations):
            sender = bench._sender(target, "warmup", 1, 0, number)
            for step in bench.conversation(target, target.orders[number % len(target.orders)]):
                ms, outcome = await bench.send(client, target, sender, step)
                outcomes.append(["warmup", 1, step.kind, round(ms, 3), outcome])
    return {"conversations": conversations, "messages": len(outcomes), "errors": bench.error_counts(outcomes)}


def _by_replica(counts: Mapping[str, int], names: Mapping[str, str]) -> Dict[str, int]:
    return {names.get(url, url): count for url, count in counts.items()}


async def measure_scaled(replicas: Sequence[Target], plan: Plan, pids: Sequence[int] = ()) -> Dict[str, Any]:
    """Warm every replica up, then one replica against two at each of `plan.scaled_levels`.

    `replicas` are the servers themselves (at least two; the first is the one
    replica); the shoppers reach them through a round-robin proxy per side.
    `pids` are the processes whose CPU is counted on both sides.  Each level
    also says how many requests the proxy forwarded to each replica
    (the shoppers' greetings before the clock included) and how many it
    could not.
    """
    if len(replicas) < 2:
        raise ValueError("the comparison needs two replicas")
    started = time.perf_counter()
    names = {replica.url: replica.label for replica in replicas}
    result: Dict[str, Any] = {
        "replicas": {replica.label: replica.url for replica in replicas},
        "sides": {key: label for key, label, _ in SIDES}, "warmup": {},
        "throughput": {key: [] for key, _, _ in SIDES}, "samples": {key: [] for key, _, _ in SIDES},
    }
    for replica in replicas:
        print(f"  warm-up: {replica.label}, {plan.warmup} conversation(s) ...", flush=True)
        result["warmup"][replica.label] = await warm_up(replica, plan.warmup)
    proxies = [RoundRobinProxy([replica.url for replica in replicas[:count]]) for _, _, count in SIDES]
    try:
        sides = []
        for (key, label, _count), proxy in zip(SIDES, proxies):
            await proxy.start()
            sides.append((Target(key, proxy.url, replicas[0].orders, label=label, script=replicas[0].script,
                                 pids=pids), proxy))
        for shoppers in plan.scaled_levels:
            for target, proxy in sides:
                print(f"  scaled out: {target.label}, {shoppers} shopper(s) at once ...", flush=True)
                before = proxy.counts()
                level = await bench.measure_throughput(target, plan, shoppers)
                after = proxy.counts()
                level["proxy"] = {kind: _by_replica({url: after[kind][url] - before[kind][url] for url in after[kind]},
                                                    names) for kind in after}
                result["samples"][target.name].extend(level.pop("samples"))
                result["throughput"][target.name].append(level)
    finally:
        for proxy in proxies:
            await proxy.close()
    result["measured_s"] = round(time.perf_counter() - started, 1)
    return result


async def _measure(cluster: Cluster, plan: Plan) -> Dict[str, Any]:
    started = time.monotonic()
    await cluster.wait_ready()
    print(f"All ready after {time.monotonic() - started:.0f} s; measuring ...", flush=True)
    return await measure_scaled(cluster.replicas, plan, cluster.server_pids())


def run(plan: Plan, engines: Engines, model: Optional[Path] = None) -> Dict[str, Any]:
    """Check the engines, start the layout, measure; the report's `scaled_out` section.

    Raises `BenchError` (or `EngineError`) when it cannot run, after
    stopping and removing whatever it had started.
    """
    try:
        model = model or latest_model(PROJECT_ROOT / "models")
    except StartupError as exc:
        raise BenchError(str(exc)) from None
    check(engines)
    print("\nScaled out: one action server and two Rasa replicas on PostgreSQL, Redis and RabbitMQ "
          f"({model.name}) ...", flush=True)
    with Cluster(engines, model) as cluster:
        print(f"  starting, seeding the store meanwhile (logs in {bench._relative(cluster.dir)}) ...", flush=True)
        cluster.start()
        result = asyncio.run(_measure(cluster, plan))
    return {"description": DESCRIPTION, "engines": engines.as_dict(), "model": bench._relative(model),
            "rasa_version": cluster.replicas[0].info.get("rasa_version"), **result,
            "load_average_after": bench._load_average()}

