"""`make bench`: latency and throughput of the assistant, next to a bare Rasa baseline.

A figure on its own says little on a machine shared with other work, so one
run starts both servers side by side and sends them the same conversations
over the same REST channel, with the same kind of tracker store: the assistant
(`python -m bot run`: its model, custom actions and a freshly seeded demo
store) and a bare Rasa assistant from `tools/baseline/` (the same NLU pipeline
less entity extraction, the same policies, fixed responses, no action server).  The difference between the
two columns is what the assistant adds on top of Rasa.

Two measurements per side:

* latency: one shopper at a time, conversation after conversation; the round
  trip of every message, by kind of message (p50/p95/p99/max);
* throughput: N shoppers at once (1, 8 and 32 by default), each with its own
  sender id, holding the same conversation over and over for a fixed time;
  messages per second, latency under load and errors.

Every reply is checked for a phrase it must contain, so a server answering
quickly with the wrong thing counts as an error rather than as a good figure.

Then, with those servers stopped, the scaled-out comparison (`tools/scaled.py`):
one Rasa replica against two on PostgreSQL, Redis and RabbitMQ, behind a
round-robin proxy, with the same conversations, checks and throughput
measurement at its own levels (8 and 32 shoppers by default).  When one of
the engines cannot be reached that part fails with a message naming it (and
`--no-scaled-out` leaves it out), while the single-machine figures are still
reported.

The raw samples go to `results/bench.json`; a Markdown summary is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar
from urllib.parse import urlsplit

import httpx

from bot.config import PROJECT_ROOT, Settings
from bot.serving.runner import run_root, stop_processes
from tools.engines import DEFAULT_POSTGRES, DEFAULT_RABBITMQ, DEFAULT_REDIS, EngineError, Engines
from tools.engines import check as check_engines

REST_PATH = "/webhooks/rest/webhook"
REQUEST_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 45.0  # the runner stops Rasa first (up to 25 s, finishing its turns), then the rest
BASELINE_DIR = PROJECT_ROOT / "bench" / "baseline"
DEFAULT_BASELINE_MODEL = PROJECT_ROOT / "models" / "baseline" / "baseline.tar.gz"
DEFAULT_OUT = PROJECT_ROOT / "results" / "bench.json"

#: Demo scenarios whose status answer ends the flow (no follow-up offer), so the
#: small talk after it is read the same way in every conversation.
STATUS_SCENARIOS = ("not_shipped", "in_transit_on_time", "out_for_delivery", "delivered", "failed_attempt",
                    "available_for_pickup", "exception", "returned_to_sender", "split_shipment")

#: kind of message -> how the report names it, in the report's order.
KINDS = {
    "greeting": "greeting",
    "status_question": "status question",
    "order_number": "order number",
    "proof_and_status": "proof + status answer",
    "small_talk": "small talk",
}

#: One shopper's conversation: kind, message ("{order_number}" and "{postcode}" come
#: from a demo order) and, per side, a phrase its reply must contain.
SCRIPT: Tuple[Tuple[str, str, Mapping[str, str]], ...] = (
    ("greeting", "hi there", {"wismo": "order assistant", "baseline": "Hello"}),
    ("status_question", "where is my order?", {"wismo": "order number", "baseline": "order number"}),
    ("order_number", "{order_number}", {"wismo": "postcode", "baseline": "Noted"}),
    ("proof_and_status", "{postcode}", {"wismo": "that matches", "baseline": "Noted"}),
    ("small_talk", "are you a bot?", {"wismo": "automated assistant", "baseline": "bot"}),
    ("small_talk", "thank you!", {"wismo": "welcome", "baseline": "Glad"}),
)

LABELS = {"wismo": "WISMO assistant", "baseline": "bare Rasa"}


class BenchError(Exception):
    """The benchmark cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class Step:
    """One message of a conversation and the phrase its answer must contain."""

    kind: str
    text: str
    expect: str


@dataclass
class Target:
    """A server under test: where it listens and the demo orders to ask it about.

    `script` picks the expected replies in `SCRIPT` ("wismo" or "baseline";
    by default the `name`); `pids` are the server processes whose CPU time is
    counted (none: not counted).
    """

    name: str
    url: str
    orders: Sequence[Mapping[str, str]]
    label: str = ""
    pids: Sequence[int] = ()
    info: Dict[str, object] = field(default_factory=dict)
    script: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or LABELS.get(self.name, self.name)
        self.script = self.script or self.name
        if not self.orders:
            raise BenchError(f"{self.label}: no demo orders to hold status conversations about.")


@dataclass(frozen=True)
class Plan:
    """How much load to send: the command line's options, checked."""

    conversations: int = 20
    warmup: int = 2
    levels: Tuple[int, ...] = (1, 8, 32)
    duration_s: Optional[float] = 20.0
    conversations_per_shopper: Optional[int] = None
    scaled_levels: Tuple[int, ...] = (8, 32)

    def as_dict(self) -> Dict[str, object]:
        return {"conversations": self.conversations, "warmup_conversations": self.warmup,
                "concurrency_levels": list(self.levels), "scaled_out_concurrency_levels": list(self.scaled_levels),
                "duration_s": None if self.conversations_per_shopper else self.duration_s,
                "conversations_per_shopper": self.conversations_per_shopper,
                "messages_per_conversation": len(SCRIPT)}


# --- the load --------------------------------------------------------------------------

def conversation(target: Target, order: Mapping[str, str]) -> List[Step]:
    """The script filled in with one demo order, with the replies `target` must give."""
    return [Step(kind, text.format(order_number=order["order_number"], postcode=order["postcode"]),
                 expect[target.script])
            for kind, text, expect in SCRIPT]


def _client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0), limits=limits)


async def send(client: httpx.AsyncClient, target: Target, sender: str, step: Step) -> Tuple[float, str]:
    """Send one message; its round trip in ms and what came back.

    The outcome is "ok", "wrong_answer" (the reply lacks the expected phrase),
    "empty" (no text at all), "http_<status>" or "transport" (refused,
    reset or timed out).  Failures are results here, never exceptions: a
    server that breaks under load is exactly what the throughput run is for.
    """
    started = time.perf_counter()
    try:
        response = await client.post(target.url + REST_PATH, json={"sender": sender, "message": step.text})
    except httpx.HTTPError:
        return (time.perf_counter() - started) * 1000, "transport"
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return elapsed, f"http_{response.status_code}"
    try:
        messages = response.json()
    except ValueError:
        return elapsed, "empty"
    if not isinstance(messages, list):
        return elapsed, "empty"
    texts = " ".join(str(m.get("text") or "") for m in messages if isinstance(m, dict))
    if not texts.strip():
        return elapsed, "empty"
    return elapsed, "ok" if step.expect in texts else "wrong_answer"


def _sender(target: Target, phase: str, shoppers: int, shopper: int, number: int) -> str:
    return f"bench-{target.name}-{phase}-{shoppers}-{shopper}-{number}-{secrets.token_hex(4)}"


async def measure_latency(target: Target, plan: Plan) -> Tuple[List[List[object]], Optional[float]]:
    """One shopper at a time; `plan.warmup` conversations first, not counted.

    Returns samples `[phase, shoppers, kind, ms, outcome]` and the servers'
    CPU ms per counted message (None where it cannot be read).
    """
    samples: List[List[object]] = []
    cpu_before: Optional[float] = None
    async with _client(1) as client:
        for number in range(plan.warmup + plan.conversations):
            if number == plan.warmup:
                cpu_before = tree_cpu_seconds(target.pids)
            sender = _sender(target, "latency", 1, 0, number)
            for step in conversation(target, target.orders[number % len(target.orders)]):
                ms, outcome = await send(client, target, sender, step)
                if number >= plan.warmup:
                    samples.append(["latency", 1, step.kind, round(ms, 3), outcome])
    return samples, _cpu_per_message(cpu_before, tree_cpu_seconds(target.pids), len(samples))


async def measure_throughput(target: Target, plan: Plan, shoppers: int) -> Dict[str, Any]:
    """`shoppers` conversations at once, back to back, for the plan's time or count.

    Each shopper first sends one greeting of its own (not counted) so the
    connections are open before the clock starts.  In timed runs no message is
    started after the deadline; the elapsed time runs until the last answer.
    """
    samples: List[List[object]] = []
    conversations = [0]
    async with _client(shoppers) as client:
        greeting = conversation(target, target.orders[0])[0]
        await asyncio.gather(*(send(client, target, _sender(target, "warmup", shoppers, i, 0), greeting)
                               for i in range(shoppers)))
        cpu_before = tree_cpu_seconds(target.pids)
        started = time.perf_counter()
        deadline = None if plan.conversations_per_shopper else started + float(plan.duration_s or 0)

        async def shopper(index: int) -> None:
            number = 0
            while deadline is not None or number < (plan.conversations_per_shopper or 0):
                order = target.orders[(index + number * shoppers) % len(target.orders)]
                sender = _sender(target, "throughput", shoppers, index, number)
                for step in conversation(target, order):
                    if deadline is not None and time.perf_counter() >= deadline:
                        return
                    ms, outcome = await send(client, target, sender, step)
                    samples.append(["throughput", shoppers, step.kind, round(ms, 3), outcome])
                number += 1
                conversations[0] += 1

        await asyncio.gather(*(shopper(i) for i in range(shoppers)))
        elapsed = time.perf_counter() - started
        cpu_after = tree_cpu_seconds(target.pids)
    return {"shoppers": shoppers, "elapsed_s": round(elapsed, 3), "messages": len(samples),
            "conversations_completed": conversations[0],
            "messages_per_s": round(len(samples) / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_ms": summarise([float(s[3]) for s in samples]), "errors": error_counts(samples),
            "server_cpu_ms_per_message": _cpu_per_message(cpu_before, cpu_after, len(samples)),
            "samples": samples}


async def measure(targets: Sequence[Target], plan: Plan) -> Dict[str, Any]:
    """Both measurements for every target, one target at a time, and the report.

    Targets take turns within each phase, so a burst of other work on the
    machine is less likely to land on one side only.
    """
    started = time.perf_counter()
    report: Dict[str, Any] = {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "plan": plan.as_dict(),
        "targets": {t.name: {"label": t.label, "url": t.url, **t.info} for t in targets},
        "latency": {}, "throughput": {t.name: [] for t in targets}, "samples": {t.name: [] for t in targets},
    }
    for target in targets:
        print(f"  latency: {target.label}, {plan.conversations} conversations ...", flush=True)
        samples, cpu = await measure_latency(target, plan)
        report["latency"][target.name] = latency_summary(samples, cpu)
        report["samples"][target.name].extend(samples)
    for shoppers in plan.levels:
        for target in targets:
            print(f"  throughput: {target.label}, {shoppers} shopper(s) at once ...", flush=True)
            level = await measure_throughput(target, plan, shoppers)
            report["samples"][target.name].extend(level.pop("samples"))
            report["throughput"][target.name].append(level)
    report["machine"]["load_average_after"] = _load_average()
    report["measured_s"] = round(time.perf_counter() - started, 1)
    return report


# --- figures ---------------------------------------------------------------------------

def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually observed, never interpolated."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    return {"n": len(values), "p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
            "p99": round(percentile(values, 99), 1), "max": round(max(values), 1),
            "mean": round(sum(values) / len(values), 1)}


def error_counts(samples: Sequence[Sequence[object]]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for sample in samples:
        if sample[4] != "ok":
            counts[str(sample[4])] = counts.get(str(sample[4]), 0) + 1
    return counts


def latency_summary(samples: Sequence[Sequence[object]], cpu_ms_per_message: Optional[float]) -> Dict[str, object]:
    by_kind = {kind: summarise([float(s[3]) for s in samples if s[2] == kind]) for kind in KINDS}
    return {"by_kind": by_kind, "all": summarise([float(s[3]) for s in samples]),
            "errors": error_counts(samples), "server_cpu_ms_per_message": cpu_ms_per_message}


def tree_cpu_seconds(pids: Sequence[int]) -> Optional[float]:
    """CPU time used so far by `pids` and all their descendants (Linux /proc; None elsewhere).

    Busy neighbours stretch latencies but not the CPU a server spends per
    message, so this figure stays comparable when the machine is not quiet.
    """
    proc = Path("/proc")
    if not pids or not (proc / "self" / "stat").is_file():
        return None
    parents: Dict[int, int] = {}
    ticks: Dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    wanted = set(pids)
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        wanted |= more
        grew = bool(more)
    return sum(ticks.get(pid, 0) for pid in wanted) / os.sysconf("SC_CLK_TCK")


def _cpu_per_message(before: Optional[float], after: Optional[float], messages: int) -> Optional[float]:
    if before is None or after is None or not messages:
        return None
    return round((after - before) * 1000 / messages, 1)


def _load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> Dict[str, object]:
    """What the figures were measured on, printed with them."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": os.cpu_count(), "cpus_usable": usable, "cpu_model": _cpu_model(),
            "platform": platform.platform(), "python": platform.python_version(),
            "rasa": _version("rasa"), "rasa_sdk": _version("rasa-sdk"),
            "load_average_before": _load_average()}


# --- the report ------------------------------------------------------------------------

def _ms(stats: Mapping[str, Optional[float]], keys: Sequence[str]) -> str:
    if not stats.get("n"):
        return "-"
    return " / ".join(f"{stats[k]:.0f}" for k in keys)


def _errors(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    return "0" if not total else f"{total} (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"


def render(report: Mapping[str, Any]) -> str:
    """The report as Markdown: the machine, latency and throughput side by side, then the scaled-out comparison."""
    m = report["machine"]
    plan = report["plan"]
    targets = report["targets"]
    names = list(targets)
    labels = [str(targets[n]["label"]) for n in names]
    load = m.get("load_average_before"), m.get("load_average_after")
    lines = [
        "## Benchmark: " + " vs ".join(labels),
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpus_usable']} usable, {m['cpu_model']}), {m['platform']}; "
        f"Python {m['python']}, Rasa {m['rasa']}, rasa-sdk {m['rasa_sdk']}; "
        f"load average (1/5/15 min) {_fmt_load(load[0])} before, {_fmt_load(load[1])} after. "
        "The servers and the load generator share the machine; every message goes over REST "
        f"({REST_PATH}) on loopback.",
    ]
    for name in names:
        described = targets[name].get("description")
        if described:
            lines.append(f"{targets[name]['label']}: {described}")
    latency = report["latency"]
    lines += [
        "",
        "### Latency, one shopper at a time",
        "",
        f"{plan['conversations']} conversations of {plan['messages_per_conversation']} messages per side "
        f"after {plan['warmup_conversations']} warm-up conversations (not counted). "
        "Round trip per message in ms: p50 / p95 / p99 / max.",
        "",
        "| message | n | " + " | ".join(labels) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    keys = ("p50", "p95", "p99", "max")
    first = latency[names[0]]
    for kind, label in KINDS.items():
        n = first["by_kind"][kind]["n"]
        lines.append(f"| {label} | {n} | " + " | ".join(_ms(latency[x]["by_kind"][kind], keys)
                                                         for x in names) + " |")
    lines.append(f"| **all messages** | {first['all']['n']} | "
                 + " | ".join(_ms(latency[x]["all"], keys) for x in names) + " |")
    lines.append("| server CPU per message (ms) | | "
                 + " | ".join(_fmt_cpu(latency[x]["server_cpu_ms_per_message"]) for x in names) + " |")
    lines.append("| errors | | " + " | ".join(_errors(latency[x]["errors"]) for x in names) + " |")
    throughput = report["throughput"]
    how_long = (f"for {plan['duration_s']:g} s per level" if plan["duration_s"]
                else f"{plan['conversations_per_shopper']} conversation(s) each")
    lines += [
        "",
        "### Throughput, shoppers at once",
        "",
        f"Each shopper holds the same conversation over and over with its own sender id, {how_long}. "
        "Messages answered per second, round trip p50 / p95 in ms, server CPU ms per message, errors.",
        "",
        "| shoppers | " + " | ".join(f"{label} msg/s | p50 / p95 | CPU | errors" for label in labels) + " |",
        "|---:|" + "---:|---:|---:|---:|" * len(names),
    ]
    for index, level in enumerate(throughput[names[0]]):
        cells = []
        for name in names:
            row = throughput[name][index]
            cells += [f"{row['messages_per_s']:.1f}", _ms(row["latency_ms"], ("p50", "p95")),
                      _fmt_cpu(row["server_cpu_ms_per_message"]), _errors(row["errors"])]
        lines.append(f"| {level['shoppers']} | " + " | ".join(cells) + " |")
    if "scaled_out" in report:
        lines += [""] + render_scaled(report["scaled_out"], how_long)
    return "\n".join(lines)


def render_scaled(scaled: Mapping[str, Any], how_long: str) -> List[str]:
    """The scaled-out section: one replica against two, level by level, with the ratio of their throughput.

    When that part could not run, the section says why instead.
    """
    lines = ["### Scaled out: one replica vs two replicas", ""]
    if "error" in scaled:
        return lines + ["Not measured:", "", "```", str(scaled["error"]).strip(), "```"]
    sides = scaled["sides"]
    throughput = scaled["throughput"]
    engines = scaled["engines"]
    lines += [
        f"{scaled['description']} PostgreSQL at {engines['postgres']}, Redis at {engines['redis']}, "
        f"RabbitMQ at {engines['rabbitmq']}; they share the machine with the servers and the load generator "
        f"(load average {_fmt_load(scaled.get('load_average_after'))} after this part).",
        "",
        f"The same conversations and checks as above, {how_long}, after {_warmups(scaled['warmup'])}. "
        "Messages answered per second, round trip p50 / p95 in ms (the proxy included), server CPU ms per message "
        "(both replicas and the action server, not the engines), errors, and two replicas' messages per second "
        "over one's.",
        "",
        "| shoppers | " + " | ".join(f"{label} msg/s | p50 / p95 | CPU | errors" for label in sides.values())
        + " | two / one |",
        "|---:|" + "---:|---:|---:|---:|" * len(sides) + "---:|",
    ]
    for one, two in zip(throughput["one"], throughput["two"]):
        cells = []
        for row in (one, two):
            cells += [f"{row['messages_per_s']:.1f}", _ms(row["latency_ms"], ("p50", "p95")),
                      _fmt_cpu(row["server_cpu_ms_per_message"]), _errors(row["errors"])]
        ratio = f"{two['messages_per_s'] / one['messages_per_s']:.2f}" if one["messages_per_s"] else "n/a"
        lines.append(f"| {one['shoppers']} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def _warmups(warmup: Mapping[str, Mapping[str, Any]]) -> str:
    counts = {int(w["conversations"]) for w in warmup.values()}
    each = f"{counts.pop()} warm-up conversation(s)" if len(counts) == 1 else "warm-up conversations"
    errors = sum(sum(w["errors"].values()) for w in warmup.values())
    return f"{each} per replica (not counted{f'; {errors} of their messages failed' if errors else ''})"


def _fmt_load(load: object) -> str:
    return "/".join(f"{x:.2f}" for x in load) if isinstance(load, list) else "n/a"


def _fmt_cpu(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) else "n/a"


def write_report(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


# --- the servers -----------------------------------------------------------------------

def free_ports(count: int) -> List[int]:
    """`count` distinct ports nothing listens on now (the kernel picks them)."""
    ports: List[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in ports:
            ports.append(port)
    return ports


def _endpoints(path: Path, tracker_db: Path, action_server: bool) -> Path:
    """An endpoints file like the shipped one: SQLite tracker store, in-memory lock store."""
    lines = ["action_endpoint:\n  url: ${ACTION_ENDPOINT_URL}\n"
             "  headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}\n"] if action_server else []
    lines.append(f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tracker_db}\n")
    lines.append("lock_store:\n  type: in_memory\n")
    path.write_text("".join(lines))
    return path


_P = TypeVar("_P", bound="Processes")


class Processes:
    """Servers as child processes in their own process groups; stopped on exit, whatever happens.

    Output goes to log files in a scratch directory under `.run/`, so a
    server's messages do not mix with the report; it is removed after a good
    or interrupted run and kept (and named) after a failed one.
    """

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir=run_root()))
        self.processes: Dict[str, subprocess.Popen] = {}

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, kind: Optional[type], *_exc: object) -> None:
        self.close()
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            print(f"Server logs kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        """Everything `__exit__` undoes besides the logs: the servers, here."""
        self.stop()

    def stop(self) -> None:
        stop_processes(self.processes, timeout=STOP_TIMEOUT_S)

    def _spawn(self, name: str, argv: List[str], env: Mapping[str, str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps writing to it
        try:
            process = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        self.processes[name] = process
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


class Servers(Processes):
    """The assistant and the bare Rasa baseline, side by side on one machine."""

    def __init__(self, baseline_model: Path) -> None:
        super().__init__("bench-")
        self.baseline_model = baseline_model

    def start_wismo(self) -> Tuple[Target, Dict[str, object]]:
        """Seed a fresh store, then start `python -m bot run` on free ports against it.

        Returns the target (not yet ready) and how to check it is ready.
        """
        rasa_port, action_port, console_port = free_ports(3)
        token = secrets.token_hex(16)
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{self.dir / 'store.db'}", "RASA_HOST": "127.0.0.1",
               "RASA_PORT": str(rasa_port), "ACTION_PORT": str(action_port), "CONSOLE_PORT": str(console_port),
               "RASA_AUTH_TOKEN": token, "PYTHONUNBUFFERED": "1", "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
               "RASA_ENDPOINTS": str(_endpoints(self.dir / "wismo-endpoints.yml", self.dir / "wismo-tracker.db",
                                                action_server=True))}
        for argv in (["setup"], ["demo-orders", "--json"]):
            done = subprocess.run([sys.executable, "-m", "bot", *argv], cwd=PROJECT_ROOT, env=env,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise BenchError(f"`python -m bot {' '.join(argv)}` failed:\n{done.stdout}{done.stderr}")
        by_scenario = {row["scenario"]: row for row in json.loads(done.stdout)}
        orders = [by_scenario[s] for s in STATUS_SCENARIOS if s in by_scenario]
        process = self._spawn("wismo", [sys.executable, "-m", "bot", "run"], env)
        target = Target("wismo", f"http://127.0.0.1:{rasa_port}", orders, pids=[process.pid],
                        info={"model": "models/wismo.tar.gz (latest in models/)",
                              "description": "`python -m bot run` (Rasa, the action server with the custom actions, "
                                             "the agent console), a fresh SQLite demo store."})
        return target, {"name": "wismo", "token": token,
                        "health": [f"http://127.0.0.1:{action_port}/health"]}

    def start_baseline(self, orders: Sequence[Mapping[str, str]]) -> Tuple[Target, Dict[str, object]]:
        """`rasa run` with the baseline model, the REST channel only and no action server."""
        (port,) = free_ports(1)
        token = secrets.token_hex(16)
        credentials = self.dir / "baseline-credentials.yml"
        credentials.write_text("rest:\n")
        endpoints = _endpoints(self.dir / "baseline-endpoints.yml", self.dir / "baseline-tracker.db",
                               action_server=False)
        rasa = str(Path(sys.executable).parent / "rasa")
        argv = [rasa, "run", "--model", str(self.baseline_model), "--endpoints", str(endpoints),
                "--credentials", str(credentials), "--interface", "127.0.0.1", "--port", str(port),
                "--enable-api", "--auth-token", token]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}
        process = self._spawn("baseline", argv, env)
        target = Target("baseline", f"http://127.0.0.1:{port}", orders, pids=[process.pid],
                        info={"model": _relative(self.baseline_model),
                              "description": "`rasa run` with tools/baseline (the same pipeline less entity "
                                             "extraction, the same policies, one fixed response per intent, "
                                             "no action server)."})
        return target, {"name": "baseline", "token": token, "health": []}

    async def wait_ready(self, target: Target, check: Mapping[str, object]) -> None:
        """Until Rasa has its model loaded (and the action server answers); fails if a server dies."""
        name = str(check["name"])
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        async with httpx.AsyncClient(timeout=3.0) as client:
            while True:
                process = self.processes[name]
                if process.poll() is not None:
                    raise BenchError(f"The {target.label} server stopped while starting "
                                     f"(exit code {process.returncode}):\n{self.log_tail(name)}")
                try:
                    status = await client.get(f"{target.url}/status", params={"token": check["token"]})
                    if status.status_code == 409:  # up, but the model did not load
                        raise BenchError(f"The {target.label} server started without a model "
                                         f"({target.info.get('model')}):\n{self.log_tail(name)}")
                    healthy = [await client.get(str(url)) for url in check["health"]]
                    if (status.status_code == 200 and status.json().get("model_file")
                            and all(h.status_code == 200 for h in healthy)):
                        version = (await client.get(f"{target.url}/version")).json()
                        target.info["rasa_version"] = version.get("version")
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"The {target.label} server was not ready within {STARTUP_TIMEOUT_S:.0f} s:\n"
                                     f"{self.log_tail(name)}")
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        """Stop every server's process group (SIGTERM, then SIGKILL after a while).

        `python -m bot run` stops its own children (action server, Rasa,
        console) on SIGTERM, so signalling its group is enough; it may take its
        own stop timeout for that, hence the longer wait here.
        """
        stop_processes(self.processes, timeout=STOP_TIMEOUT_S)


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


async def _bench(servers: Servers, plan: Plan) -> Dict[str, Any]:
    wismo, wismo_check = servers.start_wismo()
    baseline, baseline_check = servers.start_baseline(wismo.orders)
    print(f"Starting the assistant and the bare Rasa baseline on free ports (logs in {_relative(servers.dir)}) ...",
          flush=True)
    started = time.monotonic()
    await asyncio.gather(servers.wait_ready(wismo, wismo_check), servers.wait_ready(baseline, baseline_check))
    print(f"Both ready after {time.monotonic() - started:.0f} s; measuring ...", flush=True)
    return await measure([wismo, baseline], plan)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(plan: Plan, *, baseline_model: Path, out: Path, engines: Optional[Engines] = None) -> int:
    """Start both servers, measure, print and save the report; the servers are stopped in every case.

    With `engines`, the scaled-out comparison follows once those servers are
    stopped.  Its engines are checked first, so an unreachable one is named
    before the long part; when that comparison cannot run, the rest is still
    measured, reported and saved, with the reason in its place, and the exit
    code is 1.
    """
    if not baseline_model.is_file():
        raise BenchError(f"No baseline model at {baseline_model}: `make bench` trains it from tools/baseline/.")
    from tools import scaled  # it builds on this module

    problem: Optional[str] = None
    if engines is not None:
        try:
            check_engines(engines)
        except EngineError as exc:
            problem = str(exc)
            print(f"{problem}\nThe single-machine part runs; the scaled-out comparison will be missing.\n",
                  file=sys.stderr, flush=True)
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Servers(baseline_model) as servers:
            report = asyncio.run(_bench(servers, plan))
        if engines is not None and problem is None:
            try:
                report["scaled_out"] = scaled.run(plan, engines)
            except (BenchError, EngineError) as exc:
                problem = str(exc)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if problem is not None:
        report["scaled_out"] = {"error": problem}
    report["wall_clock_s"] = round(time.monotonic() - started, 1)
    write_report(report, out)
    print("\n" + render(report))
    scaled_s = report.get("scaled_out", {}).get("measured_s")
    print(f"\nMeasured in {report['measured_s']} s{f' plus {scaled_s} s scaled out' if scaled_s else ''} "
          f"({report['wall_clock_s']} s with start-up and stop). Raw samples: {_relative(out)}")
    if problem is not None:
        print(f"\nThe scaled-out comparison did not run:\n{problem}", file=sys.stderr)
        return 1
    return 0


# --- the command line ------------------------------------------------------------------

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _whole_number(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number")
    return value


def _levels(text: str) -> Tuple[int, ...]:
    try:
        levels = tuple(_positive_int(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        levels = ()
    if not levels:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated positive numbers, like 1,8,32")
    return levels


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _engine_url(example: str) -> Callable[[str], str]:
    """A URL with the scheme of `example` (a driver after "+" allowed) and a host, as given."""
    scheme = urlsplit(example).scheme

    def parse(text: str) -> str:
        try:
            parts = urlsplit(text)
            usable = parts.scheme.partition("+")[0] == scheme and bool(parts.hostname) and parts.port != 0
        except ValueError:
            usable = False
        if not usable:
            raise argparse.ArgumentTypeError(f"{text!r}: give a URL like {example}")
        return text

    return parse


def _rabbitmq_url(text: str) -> str:
    """An AMQP URL on the default virtual host: Rasa's event broker settings have no other."""
    url = _engine_url(DEFAULT_RABBITMQ)(text)
    if urlsplit(url).path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"{text!r}: Rasa's event broker uses the default virtual host; "
                                         "give a URL without one, like " + DEFAULT_RABBITMQ)
    return url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench` subcommand's options (`make bench BENCH_ARGS="..."` passes them on)."""
    parser.add_argument("--conversations", type=_positive_int, default=20, metavar="N",
                        help="sequential conversations per side for the latency figures (default 20)")
    parser.add_argument("--warmup", type=_whole_number, default=2, metavar="N",
                        help="conversations sent first and not counted (default 2)")
    parser.add_argument("--concurrency", type=_levels, default=(1, 8, 32), metavar="N,N,...",
                        help="numbers of simultaneous shoppers, comma-separated (default 1,8,32)")
    parser.add_argument("--duration", type=_seconds, default=20.0, metavar="SECONDS",
                        help="seconds of load per concurrency level and side (default 20)")
    parser.add_argument("--conversations-per-shopper", type=_positive_int, metavar="N",
                        help="instead of --duration: this many conversations per shopper")
    parser.add_argument("--baseline-model", type=Path, default=DEFAULT_BASELINE_MODEL, metavar="PATH",
                        help="the bare Rasa model (make bench trains it from tools/baseline/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="PATH",
                        help="raw results (default results/bench.json)")
    scaled = parser.add_argument_group(
        "scaled out", "After the part above: one Rasa replica against two, sharing PostgreSQL, Redis and RabbitMQ "
                      "(fresh databases, a lock-key prefix, a queue and an exchange per run, removed afterwards).")
    scaled.add_argument("--no-scaled-out", dest="scaled_out", action="store_false",
                        help="leave the scaled-out comparison out (no PostgreSQL, Redis or RabbitMQ needed)")
    scaled.add_argument("--scaled-concurrency", type=_levels, default=(8, 32), metavar="N,N,...",
                        help="numbers of simultaneous shoppers for it, comma-separated (default 8,32); "
                             "--duration or --conversations-per-shopper as above")
    scaled.add_argument("--postgres-url", type=_engine_url(DEFAULT_POSTGRES), default=DEFAULT_POSTGRES,
                        metavar="URL", help="a PostgreSQL server and a database to connect to, as a user who may "
                                            f"create databases (default {DEFAULT_POSTGRES})")
    scaled.add_argument("--redis-url", type=_engine_url(DEFAULT_REDIS), default=DEFAULT_REDIS, metavar="URL",
                        help=f"the Redis server and database for the lock store (default {DEFAULT_REDIS})")
    scaled.add_argument("--rabbitmq-url", type=_rabbitmq_url, default=DEFAULT_RABBITMQ, metavar="URL",
                        help=f"the RabbitMQ server for the event broker (default {DEFAULT_RABBITMQ})")


def main(_settings: Settings, args: argparse.Namespace) -> int:
    plan = Plan(conversations=args.conversations, warmup=args.warmup, levels=tuple(args.concurrency),
                duration_s=args.duration, conversations_per_shopper=args.conversations_per_shopper,
                scaled_levels=tuple(args.scaled_concurrency))
    engines = Engines(args.postgres_url, args.redis_url, args.rabbitmq_url) if args.scaled_out else None
    try:
        return run(plan, baseline_model=args.baseline_model, out=args.out, engines=engines)
    except BenchError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted; every server is stopped, the scaled-out databases, lock keys, queue and exchange are "
              "removed, and nothing was written.", file=sys.stderr)
        return 130
