"""`make bench`: the load generator and its report, against the suite's running assistant.

The whole benchmark (a second assistant, the baseline model and server) is
`make bench` itself; training and starting the baseline here would add a
minute to the suite for nothing these tests do not already see.  The baseline
side is checked as a project instead: valid Rasa data, a response for every
phrase the benchmark expects from it, and the assistant's own pipeline and
policies, so the comparison stays like for like.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import yaml

from tools import bench
from tools.__main__ import main as cli_main

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
    """Like for like: only entity extraction (the baseline has no entities) is left out."""
    def comparable(config):
        entity_only = {"RegexEntityExtractor", "EntitySynonymMapper"}
        return ([{k: v for k, v in c.items() if k != "entity_recognition"}
                 for c in config["pipeline"] if c["name"] not in entity_only], config["policies"])

    ours = yaml.safe_load((ROOT / "config.yml").read_text())
    baseline = yaml.safe_load((ROOT / "tools" / "baseline" / "config.yml").read_text())
    assert comparable(baseline) == comparable(ours)
