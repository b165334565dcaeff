"""`make profile`: where the Rasa server spends its CPU while shoppers hold status conversations.

It starts the assistant as `make bench` does (`python -m bot run` on free
ports with a fresh demo store), sends it the bench's conversations from a few
shoppers at once, and samples the Rasa server process with py-spy meanwhile
(only the thread holding the GIL, so the samples are the Python work that
keeps other turns waiting, not threads waiting on I/O).
py-spy reads the process from outside, so the server runs unchanged.  The
raw stacks go to a file (`results/profile-rasa.txt`, one line per distinct
stack with its sample count: the format flame-graph tools read), and the
functions with the largest share of the samples are printed, counting a
function wherever it is on the stack (inclusive) and where it is on top
(self).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from bot.config import PROJECT_ROOT, Settings
from tools.bench import BenchError, Plan, Servers, measure_throughput, tree_cpu_seconds

DEFAULT_OUT = PROJECT_ROOT / "results" / "profile-rasa.txt"


def py_spy() -> str:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if not found:
        raise BenchError("py-spy is not installed: `.venv/bin/pip install py-spy` (it samples the server "
                         "from outside; nothing else needs it).")
    return found


def children(pid: int) -> List[int]:
    """The process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


#: --server -> the module its process runs.
SERVERS = {"rasa": "bot.serving.rasa_server", "action": "bot.serving.action_server"}


def server_pid(runner_pid: int, server: str = "rasa") -> int:
    """The Rasa server (or the action server) among the children of `python -m bot run`."""
    for child in children(runner_pid):
        try:
            command = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if SERVERS[server].encode() in command:
            return child
    raise BenchError(f"The {server} server process was not found among `python -m bot run`'s children.")


def _function(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (path/file.py)`: one row per function, not per line."""
    head, _, rest = frame.rpartition(":")
    return f"{head})" if rest.endswith(")") and rest[:-1].isdigit() else frame


#: Frames where a thread waits for work: py-spy reports them as running, but they use no CPU.
IDLE = ("_worker (concurrent/futures/thread.py)", "wait (threading.py)", "select (selectors.py)")


def parse_raw(lines: Iterable[str]) -> Tuple[Counter, Counter, int]:
    """Inclusive and self sample counts per function from py-spy's raw output, and the total."""
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";") if frame]
        if not frames or frames[-1] in IDLE:
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    return inclusive, own, total


def render(inclusive: Counter, own: Counter, total: int, top: int) -> str:
    def table(title: str, counts: Counter) -> List[str]:
        rows = [f"{title}:", "  share  function (file:line)"]
        # Frames on (nearly) every stack, the server's own loop, say nothing about where the time goes.
        shown = [(frame, n) for frame, n in counts.most_common() if n < 0.75 * total][:top]
        rows += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in shown]
        return rows

    if not total:
        return "No samples: the server was idle or py-spy could not read it."
    return "\n".join([f"{total} samples.", *table("Inclusive (anywhere on the stack)", inclusive), "",
                      *table("Self (on top of the stack)", own)])


async def _load(servers: Servers, seconds: float, shoppers: int, out: Path, rate: int, server: str) -> str:
    target, check = servers.start_wismo()
    await servers.wait_ready(target, check)
    runner_pid = servers.processes["wismo"].pid
    rasa_pid = server_pid(runner_pid, server)
    plan = Plan(levels=(shoppers,), duration_s=seconds)
    print(f"Warming up, then sampling the {server} server (pid {rasa_pid}) for {seconds:.0f} s "
          f"with {shoppers} shopper(s) ...", flush=True)
    await measure_throughput(target, Plan(levels=(shoppers,), duration_s=3.0), shoppers)
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = await asyncio.create_subprocess_exec(
        py_spy(), "record", "--pid", str(rasa_pid), "--format", "raw", "--output", str(out),
        "--rate", str(rate), "--duration", str(int(seconds)), "--nonblocking", "--gil",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    processes = {_name(pid): pid for pid in children(runner_pid)}
    before = {name: tree_cpu_seconds([pid]) for name, pid in processes.items()}
    level = await measure_throughput(target, plan, shoppers)
    after = {name: tree_cpu_seconds([pid]) for name, pid in processes.items()}
    _, spy_err = await spy.communicate()
    if spy.returncode != 0:
        raise BenchError(f"py-spy failed (exit code {spy.returncode}): {spy_err.decode(errors='replace')[-800:]}")
    errors = {k: v for k, v in level["errors"].items() if k != "ok"}
    per_process = ", ".join(f"{name} {1000 * (after[name] - before[name]) / level['messages']:.1f}"
                            for name in processes if before[name] is not None and after[name] is not None)
    return (f"{level['messages']} messages, {level['messages_per_s']} msg/s, errors: {errors or 'none'}\n"
            f"CPU ms per message: all {level['server_cpu_ms_per_message']} ({per_process})")


def _name(pid: int) -> str:
    """The server a child of `python -m bot run` is, from its command line."""
    try:
        command = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return f"pid {pid}"
    for marker, name in (("rasa_server", "Rasa"), ("action_server", "action server"), ("console", "console")):
        if marker in command:
            return name
    return f"pid {pid}"


def run(seconds: float, shoppers: int, out: Path, top: int, rate: int, server: str = "rasa") -> int:
    with Servers(baseline_model=Path("unused")) as servers:
        summary = asyncio.run(_load(servers, seconds, shoppers, out, rate, server))
    inclusive, own, total = parse_raw(out.read_text().splitlines())
    print(summary)
    print(render(inclusive, own, total, top))
    print(f"\nRaw stacks: {out.relative_to(PROJECT_ROOT) if out.is_relative_to(PROJECT_ROOT) else out}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to sample (default 30)")
    parser.add_argument("--shoppers", type=int, default=4, help="shoppers at once (default 4)")
    parser.add_argument("--rate", type=int, default=100, help="samples per second (default 100)")
    parser.add_argument("--top", type=int, default=30, help="functions to list (default 30)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="raw stacks (default results/profile-rasa.txt)")
    parser.add_argument("--server", choices=sorted(SERVERS), default="rasa",
                        help="which process to sample: the Rasa server (default) or the action server")
    parser.add_argument("--from-file", type=Path, metavar="PATH",
                        help="only summarise an earlier raw profile, start nothing")


def main(_settings: Settings, args: argparse.Namespace) -> int:
    if args.from_file:
        inclusive, own, total = parse_raw(args.from_file.read_text().splitlines())
        print(render(inclusive, own, total, args.top))
        return 0
    if args.seconds <= 0 or args.shoppers < 1 or args.rate < 1 or args.top < 1:
        print("--seconds, --shoppers, --rate and --top must be positive", file=sys.stderr)
        return 2
    try:
        return run(args.seconds, args.shoppers, args.out, args.top, args.rate, args.server)
    except BenchError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def summary_counts(lines: Iterable[str]) -> Dict[str, float]:
    """Inclusive shares (0-1) per function, for comparing two profiles."""
    inclusive, _, total = parse_raw(lines)
    return {frame: n / total for frame, n in inclusive.items()} if total else {}
