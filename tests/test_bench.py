"""`make bench`: the load generator and its report, against the suite's running assistant.

The whole benchmark (a second assistant, the baseline model and server) is
`make bench` itself; training and starting the baseline here would add a
minute to the suite for nothing these tests do not already see.  The baseline
side is checked as a project instead: valid Rasa data, a response for every
phrase the benchmark expects from it, and the assistant's own pipeline and
policies, so the comparison stays like for like.

The scaled-out comparison's parts are checked without Rasa: the round-robin
proxy and the whole one-vs-two measurement against small HTTP servers on
loopback that answer as the REST channel does, the report's table, the
engines' messages and, where the local engines run, that a run's databases,
lock keys, queue and exchange are all removed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, List

import httpx
import pytest
import yaml
from aiohttp import web

from tools import bench, engines, scaled
from tools.__main__ import main as cli_main
from tools.proxy import RoundRobinProxy

from .helpers.servers import ROOT, free_port

RASA = str(Path(sys.executable).parent / "rasa")


def wismo_target(assistant) -> bench.Target:
    return bench.Target("wismo", assistant["url"], [assistant["orders"][s] for s in bench.STATUS_SCENARIOS])


async def test_a_tiny_run_against_the_assistant_answers_every_message_and_reports_it(assistant, tmp_path):
    """Two conversations one at a time, then 1 and 2 shoppers at once: all answered as expected, counted by kind."""
    plan = bench.Plan(conversations=2, warmup=1, levels=(1, 2), conversations_per_shopper=1)
    report = await bench.measure([wismo_target(assistant)], plan)

    per_conversation = len(bench.SCRIPT)
    latency = report["latency"]["wismo"]
    assert latency["errors"] == {}
    assert latency["all"]["n"] == 2 * per_conversation
    assert {kind: stats["n"] for kind, stats in latency["by_kind"].items()} == {
        "greeting": 2, "status_question": 2, "order_number": 2, "proof_and_status": 2, "small_talk": 4}
    for stats in [latency["all"], *latency["by_kind"].values()]:
        assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]

    levels = report["throughput"]["wismo"]
    assert [row["shoppers"] for row in levels] == [1, 2]
    assert [row["messages"] for row in levels] == [per_conversation, 2 * per_conversation]
    assert [row["conversations_completed"] for row in levels] == [1, 2]
    assert all(row["errors"] == {} and row["messages_per_s"] > 0 for row in levels)

    samples = report["samples"]["wismo"]
    assert len(samples) == 5 * per_conversation  # the warm-ups are not among them
    assert {s[4] for s in samples} == {"ok"}

    machine = report["machine"]
    assert machine["cpus"] == os.cpu_count() and machine["rasa"] == version("rasa") and machine["python"]
    assert report["targets"]["wismo"]["url"] == assistant["url"]

    text = bench.render(report)
    assert f"Rasa {version('rasa')}" in text and f"{os.cpu_count()} CPUs" in text
    assert "| proof + status answer | 2 |" in text and "| small talk | 4 |" in text
    assert "| **all messages** | 12 |" in text
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip().isdigit()] == ["1", "2"]

    out = tmp_path / "results" / "bench.json"
    bench.write_report(report, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))


async def test_a_reply_without_the_expected_phrase_counts_as_a_wrong_answer(assistant):
    """A fast answer is not a good figure unless it is the right answer."""
    target = wismo_target(assistant)
    async with httpx.AsyncClient(timeout=60) as client:
        right = await bench.send(client, target, "bench-check-1", bench.Step("greeting", "hi there", "order assistant"))
        wrong = await bench.send(client, target, "bench-check-2", bench.Step("greeting", "hi there", "Noted, thank"))
    assert right[1] == "ok" and wrong[1] == "wrong_answer"
    assert right[0] > 0 and wrong[0] > 0


async def test_a_server_that_refuses_connections_is_reported_as_errors_not_a_crash(assistant):
    """Every message to a closed port is a transport error in the figures, and the report still renders."""
    target = bench.Target("wismo", f"http://127.0.0.1:{free_port()}", [assistant["orders"]["delivered"]])
    plan = bench.Plan(conversations=1, warmup=0, levels=(2,), conversations_per_shopper=1)
    report = await bench.measure([target], plan)
    per_conversation = len(bench.SCRIPT)
    assert report["latency"]["wismo"]["errors"] == {"transport": per_conversation}
    assert report["throughput"]["wismo"][0]["errors"] == {"transport": 2 * per_conversation}
    assert f"{per_conversation} (transport {per_conversation})" in bench.render(report)


def test_without_the_baseline_model_it_says_how_to_get_one_and_starts_nothing(tmp_path, capsys):
    """`python -m bot bench` with no baseline model exits 1 with the way out, before any server starts."""
    out = tmp_path / "bench.json"
    code = cli_main(["bench", "--baseline-model", str(tmp_path / "missing.tar.gz"), "--out", str(out)])
    assert code == 1
    assert "make bench" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("option", [
    ["--concurrency", "1,eight"],   # not a number
    ["--concurrency", "0"],         # nobody at once
    ["--duration", "-5"],           # negative time
    ["--conversations", "0"],       # nothing to measure
    ["--scaled-concurrency", "0,8"],                  # nobody at once on the scaled-out side
    ["--postgres-url", "mysql://root@127.0.0.1/x"],   # not PostgreSQL
    ["--redis-url", "redis://:6379/1"],               # no host
    ["--rabbitmq-url", "http://127.0.0.1:5672/"],     # not AMQP
    ["--rabbitmq-url", "amqp://guest:guest@127.0.0.1:5672/shop"],  # a virtual host Rasa would not use
])
def test_it_refuses_options_that_measure_nothing(option, capsys):
    """Bad options stop the command with a usage message (exit 2), not a traceback later."""
    with pytest.raises(SystemExit) as stopped:
        cli_main(["bench", *option])
    assert stopped.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow  # runs `rasa data validate`
def test_the_baseline_is_valid_rasa_data_with_every_expected_reply():
    """tools/baseline passes `rasa data validate --fail-on-warnings`, and says each phrase the bench expects."""
    base = ROOT / "tools" / "baseline"
    result = subprocess.run([RASA, "data", "validate", "--config", str(base / "config.yml"),
                             "--domain", str(base / "domain.yml"), "--data", str(base / "data"),
                             "--fail-on-warnings"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    domain = yaml.safe_load((base / "domain.yml").read_text())
    texts = [variant["text"] for variants in domain["responses"].values() for variant in variants]
    for kind, message, expected in bench.SCRIPT:
        assert any(expected["baseline"] in text for text in texts), (kind, message)


def test_the_baseline_has_the_assistants_pipeline_and_policies():
    """Like for like: only entity extraction (the baseline has no entities) and our own components are left out."""
    def comparable(config):
        entity_only = {"RegexEntityExtractor", "EntitySynonymMapper"}
        return ([{k: v for k, v in c.items() if k != "entity_recognition"}
                 for c in config["pipeline"] if c["name"] not in entity_only and not c["name"].startswith("bot.")],
                config["policies"])

    ours = yaml.safe_load((ROOT / "config.yml").read_text())
    baseline = yaml.safe_load((ROOT / "tools" / "baseline" / "config.yml").read_text())
    assert comparable(baseline) == comparable(ours)


# --- the scaled-out comparison ------------------------------------------------------------

#: A demo order, as `python -m bot demo-orders --json` lists them.
ORDER = {"scenario": "delivered", "order_number": "10001", "postcode": "EC1A 1BB"}
#: What the fake replicas say to every REST message: each phrase the bench expects from the assistant.
EVERY_REPLY = " / ".join(expect["wismo"] for _, _, expect in bench.SCRIPT)
#: The order requests reach the fake replicas in, over all of them.
ARRIVALS = itertools.count()


class Upstream:
    """An HTTP server on loopback standing in for a Rasa replica: it records every request.

    The REST webhook answers as the channel does, with every phrase the bench
    checks for; any other path answers "from <name>" with the status given
    in the query (`?status=418`) and an `X-Upstream` header.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: List[Dict[str, Any]] = []
        self.url = ""
        self._runner: Any = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append({"arrived": next(ARRIVALS), "method": request.method, "path": request.path,
                          "query": request.query_string, "body": await request.read(),
                          "headers": request.headers.copy()})
        if request.path == bench.REST_PATH:
            sender = (await request.json())["sender"]
            return web.json_response([{"recipient_id": sender, "text": f"{self.name}: {EVERY_REPLY}"}])
        return web.Response(status=int(request.query.get("status", "200")), text=f"from {self.name}",
                            headers={"X-Upstream": self.name})

    async def start(self) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = "http://{}:{}".format(*self._runner.addresses[0][:2])
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Any]]:
    """Start fake replicas by name; all are stopped after the test."""
    started: List[Upstream] = []

    async def start(*names: str) -> List[Upstream]:
        servers = [await Upstream(name).start() for name in names]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        await server.stop()


def replica_target(upstream: Upstream) -> bench.Target:
    return bench.Target(f"replica-{upstream.name}", upstream.url, [ORDER], label=f"replica {upstream.name}",
                        script="wismo")


async def test_the_proxy_sends_each_request_to_the_next_upstream_in_turn(upstreams):
    """Seven requests over three upstreams go a, b, c, a, b, c, a, whoever sends them."""
    a, b, c = await upstreams("a", "b", "c")
    async with RoundRobinProxy([a.url, b.url, c.url]) as proxy, httpx.AsyncClient() as client:
        answers = [await client.get(f"{proxy.url}/anything") for _ in range(7)]
    assert [answer.text for answer in answers] == ["from a", "from b", "from c"] * 2 + ["from a"]
    assert proxy.forwarded == {a.url: 3, b.url: 2, c.url: 2}
    assert proxy.failed == {a.url: 0, b.url: 0, c.url: 0}


async def test_the_proxy_forwards_the_request_and_returns_the_upstreams_answer_unchanged(upstreams):
    """Method, path, query string, body and end-to-end headers go up; status, headers and body come back.

    Headers that only concern the connection to the proxy do not travel on.
    """
    (a,) = await upstreams("a")
    body = b'{"sender": "s", "message": "caf\\u00e9 \xc3\xa9"}'
    async with RoundRobinProxy([a.url]) as proxy, httpx.AsyncClient() as client:
        answer = await client.put(f"{proxy.url}/some/path%20here?status=418&q=a%26b&q=2", content=body,
                                  headers={"Authorization": "Bearer secret", "X-Custom": "kept",
                                           "Connection": "keep-alive, X-Hop", "X-Hop": "dropped"})
    assert answer.status_code == 418
    assert answer.text == "from a" and answer.headers["X-Upstream"] == "a"
    (seen,) = a.seen
    assert seen["method"] == "PUT"
    assert seen["path"] == "/some/path here" and seen["query"] == "status=418&q=a%26b&q=2"
    assert seen["body"] == body
    assert seen["headers"]["Authorization"] == "Bearer secret" and seen["headers"]["X-Custom"] == "kept"
    assert "X-Hop" not in seen["headers"]
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"


async def test_an_upstream_that_is_down_is_a_502_counted_as_an_error_not_a_crash(upstreams):
    """Half the requests go to a closed port: those are 502s, counted by the proxy and in the bench's errors."""
    (live,) = await upstreams("live")
    dead = f"http://127.0.0.1:{free_port()}"
    async with RoundRobinProxy([live.url, dead]) as proxy:
        async with httpx.AsyncClient() as client:
            statuses = [(await client.get(f"{proxy.url}/x")).status_code for _ in range(4)]
        assert statuses == [200, 502, 200, 502]
        assert proxy.failed == {live.url: 0, dead: 2} and proxy.forwarded == {live.url: 2, dead: 0}

        target = bench.Target("two", proxy.url, [ORDER], script="wismo")
        plan = bench.Plan(levels=(2,), conversations_per_shopper=1)
        level = await bench.measure_throughput(target, plan, 2)
    per_conversation = len(bench.SCRIPT)
    assert level["messages"] == 2 * per_conversation
    assert level["errors"] == {"http_502": per_conversation}
    assert sum(1 for sample in level["samples"] if sample[4] == "ok") == per_conversation


async def test_one_replica_against_two_measures_both_sides_through_the_proxy(upstreams, capsys):
    """Warm-ups go to each replica; one replica gets everything on its side, two share theirs; every reply checked."""
    a, b = await upstreams("A", "B")
    plan = bench.Plan(warmup=1, scaled_levels=(1, 4), conversations_per_shopper=2)
    result = await scaled.measure_scaled([replica_target(a), replica_target(b)], plan)

    per_conversation = len(bench.SCRIPT)
    assert result["warmup"] == {label: {"conversations": 1, "messages": per_conversation, "errors": {}}
                                for label in ("replica A", "replica B")}
    for side in ("one", "two"):
        levels = result["throughput"][side]
        assert [row["shoppers"] for row in levels] == [1, 4]
        assert [row["messages"] for row in levels] == [2 * per_conversation, 8 * per_conversation]
        assert all(row["errors"] == {} and row["messages_per_s"] > 0 for row in levels)
        assert {sample[4] for sample in result["samples"][side]} == {"ok"}
        assert len(result["samples"][side]) == 10 * per_conversation
    # Each level's requests: the shoppers' greetings before the clock, then the counted messages.
    requests = [shoppers + 2 * shoppers * per_conversation for shoppers in (1, 4)]
    assert [row["proxy"]["forwarded"] for row in result["throughput"]["one"]] == [
        {"replica A": n} for n in requests]
    for n, row in zip(requests, result["throughput"]["two"]):
        forwarded = row["proxy"]["forwarded"]
        assert sum(forwarded.values()) == n and abs(forwarded["replica A"] - forwarded["replica B"]) <= 1
    assert len(b.seen) == per_conversation + sum(row["proxy"]["forwarded"]["replica B"]
                                                 for row in result["throughput"]["two"])
    # One shopper's conversation on two replicas goes back and forth between them, message by message.
    by_sender: Dict[str, List[str]] = {}
    for _arrived, name, request in sorted((r["arrived"], u.name, r) for u in (a, b) for r in u.seen):
        by_sender.setdefault(json.loads(request["body"])["sender"], []).append(name)
    alone = [names for sender, names in by_sender.items() if sender.startswith("bench-two-throughput-1-")]
    assert len(alone) == 2
    assert all(names in (["A", "B"] * 3, ["B", "A"] * 3) for names in alone), alone


async def report_with(upstream: Upstream, scaled_out: Dict[str, Any]) -> Dict[str, Any]:
    """A real single-machine report (one tiny run against `upstream`) with `scaled_out` added."""
    plan = bench.Plan(conversations=1, warmup=0, levels=(1,), conversations_per_shopper=1)
    report = await bench.measure([bench.Target("wismo", upstream.url, [ORDER])], plan)
    report["scaled_out"] = scaled_out
    return report


def scaled_row(shoppers: int, per_s: float, p50: float, p95: float, cpu: Any, errors: Dict[str, int]) -> Dict:
    return {"shoppers": shoppers, "messages_per_s": per_s, "latency_ms": {"n": 10, "p50": p50, "p95": p95},
            "server_cpu_ms_per_message": cpu, "errors": errors}


async def test_the_report_sets_one_replica_beside_two_with_the_ratio(upstreams):
    """A row per level: each side's msg/s, p50 / p95, CPU and errors, then two's msg/s over one's."""
    (a,) = await upstreams("a")
    report = await report_with(a, {
        "description": scaled.DESCRIPTION, "engines": engines.Engines().as_dict(),
        "sides": {"one": "one replica", "two": "two replicas"},
        "warmup": {"replica A": {"conversations": 2, "messages": 12, "errors": {}},
                   "replica B": {"conversations": 2, "messages": 12, "errors": {"transport": 1}}},
        "throughput": {"one": [scaled_row(8, 20.0, 300, 700, 45.2, {}), scaled_row(32, 21.0, 1400, 2900, 44, {})],
                       "two": [scaled_row(8, 30.0, 210, 520, 47.9, {}),
                               scaled_row(32, 0.0, 9, 12, None, {"http_502": 2, "transport": 1})]},
    })
    text = bench.render(report)
    section = text[text.index("### Scaled out: one replica vs two replicas"):]
    assert "| shoppers | one replica msg/s | p50 / p95 | CPU | errors | two replicas msg/s | p50 / p95 | CPU | " \
           "errors | two / one |" in section
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert rows == ["| 8 | 20.0 | 300 / 700 | 45 | 0 | 30.0 | 210 / 520 | 48 | 0 | 1.50 |",
                    "| 32 | 21.0 | 1400 / 2900 | 44 | 0 | 0.0 | 9 / 12 | n/a | 3 (http_502 2, transport 1) | 0.00 |"]
    assert "2 warm-up conversation(s) per replica (not counted; 1 of their messages failed)" in section
    assert "PostgreSQL at postgresql://postgres@127.0.0.1:5432/test" in section
    # The single-machine tables are still there, before it.
    assert text.index("### Throughput, shoppers at once") < text.index("### Scaled out")


async def test_a_scaled_out_part_that_could_not_run_says_why_in_its_place(upstreams):
    (a,) = await upstreams("a")
    problem = "Redis at redis://127.0.0.1:1/1 is not reachable (ConnectionError: refused); ... --no-scaled-out"
    text = bench.render(await report_with(a, {"error": problem}))
    section = text[text.index("### Scaled out"):]
    assert "Not measured:" in section and problem in section
    assert "### Latency, one shopper at a time" in text


def test_an_unreachable_engine_is_named_with_its_option_and_the_way_to_skip(tmp_path):
    """Before anything starts: each engine that does not answer, where it was looked for, and --no-scaled-out."""
    closed = free_port()
    unreachable = engines.Engines(f"postgresql://postgres@127.0.0.1:{closed}/test", f"redis://127.0.0.1:{closed}/1",
                                  f"amqp://guest:secret@127.0.0.1:{closed}/")
    scratch_dirs = set(ROOT.joinpath(".run").glob("bench-scaled-*"))
    with pytest.raises(engines.EngineError) as failed:
        scaled.run(bench.Plan(), unreachable, model=tmp_path / "model.tar.gz")
    lines = str(failed.value).splitlines()
    assert lines[0].startswith(f"PostgreSQL at postgresql://postgres@127.0.0.1:{closed}/test is not reachable")
    assert lines[1].startswith(f"Redis at redis://127.0.0.1:{closed}/1 is not reachable")
    assert lines[2].startswith(f"RabbitMQ at amqp://guest:***@127.0.0.1:{closed}/ is not reachable")
    assert [option in line for line, option in zip(lines, ("--postgres-url", "--redis-url", "--rabbitmq-url"))] \
        == [True, True, True]
    assert "secret" not in str(failed.value)
    assert "--no-scaled-out" in lines[-1]
    assert set(ROOT.joinpath(".run").glob("bench-scaled-*")) == scratch_dirs  # nothing was started


def test_the_replicas_read_the_endpoints_readme_tells_a_shop_to_use():
    """The bench's endpoints file is README's `endpoints.scaled.yml`, and every placeholder in it gets a value."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Running scaled out"):]
    shipped = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    assert yaml.safe_load(engines.ENDPOINTS) == yaml.safe_load(shipped)

    scratch = engines.Scratch(engines.Engines("postgresql://u:p%40ss@db.example:5433/admin",
                                              "redis://:r%2Fpw@cache.example:6380/2",
                                              "amqp://mq:m%40pw@mq.example:5673/"))
    env = scratch.environment("postgresql://u:p%40ss@db.example:5433/wismo_bench_x_tracker")
    placeholders = set(re.findall(r"\$\{(\w+)\}", engines.ENDPOINTS))
    assert placeholders - set(env) == {"ACTION_ENDPOINT_URL", "ACTION_SERVER_TOKEN"}  # the cluster sets those
    assert {k: env[k] for k in ("TRACKER_DB_HOST", "TRACKER_DB_PORT", "TRACKER_DB_NAME", "TRACKER_DB_USER",
                                "TRACKER_DB_PASSWORD")} == {
        "TRACKER_DB_HOST": "db.example", "TRACKER_DB_PORT": "5433", "TRACKER_DB_NAME": "wismo_bench_x_tracker",
        "TRACKER_DB_USER": "u", "TRACKER_DB_PASSWORD": "p@ss"}
    assert (env["REDIS_HOST"], env["REDIS_PORT"], env["REDIS_DB"], env["REDIS_PASSWORD"]) == (
        "cache.example", "6380", "2", "r/pw")
    assert (env["RABBITMQ_HOST"], env["RABBITMQ_PORT"], env["RABBITMQ_USER"], env["RABBITMQ_PASSWORD"]) == (
        "mq.example", "5673", "mq", "m@pw")
    assert re.fullmatch(r"[a-z0-9]+", env["REDIS_KEY_PREFIX"])  # Rasa refuses any other prefix
    assert env["RABBITMQ_QUEUE"] == env["RABBITMQ_EXCHANGE"] == scratch.queue


def test_a_runs_databases_lock_keys_queue_and_exchange_are_all_removed():
    """What a run makes on the local engines is gone after `remove`, and a second `remove` finds nothing left."""
    import aio_pika
    import redis
    from sqlalchemy import create_engine, text

    local = engines.Engines()
    try:
        engines.check(local)
    except engines.EngineError as exc:
        pytest.skip(f"the local engines are not all running: {str(exc).splitlines()[0]}")
    scratch = engines.Scratch(local)
    store = scratch.new_database("store")
    scratch.new_database("tracker")
    lock_key = f"{scratch.lock_prefix}:lock:rest:someone"
    keys = redis.Redis.from_url(local.redis)

    async def declare(passive: bool = False) -> None:
        connection = await aio_pika.connect(local.rabbitmq)
        try:
            channel = await connection.channel()
            await channel.declare_exchange(scratch.exchange, aio_pika.ExchangeType.FANOUT, passive=passive)
            await channel.declare_queue(scratch.queue, durable=True, passive=passive)
        finally:
            await connection.close()

    def databases() -> List[str]:
        admin = create_engine(local.postgres)
        try:
            with admin.connect() as conn:
                return [row[0] for row in conn.execute(text("select datname from pg_database where datname like "
                                                            f"'wismo_bench_{scratch.run}_%'"))]
        finally:
            admin.dispose()

    try:
        keys.set(lock_key, "{}")
        asyncio.run(declare())
        held = create_engine(store)  # a connection still open, as a server's would be
        connection = held.connect()
        assert sorted(databases()) == [f"wismo_bench_{scratch.run}_store", f"wismo_bench_{scratch.run}_tracker"]

        assert scratch.remove() == []
        connection.close()
        held.dispose()
        assert databases() == [] and scratch.created == []
        assert keys.exists(lock_key) == 0
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            asyncio.run(declare(passive=True))
        assert scratch.remove() == []
    finally:
        keys.delete(lock_key)
        keys.close()
        scratch.remove()
