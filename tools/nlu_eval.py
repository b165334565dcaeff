"""Intent recognition measured on wording the team did not write.

`make eval` runs the trained model over held-out TSVs (`text<TAB>intent[<TAB>source[<TAB>details]]`)
and prints, for each:

- strict accuracy over every message;
- **job routing**: of the messages labelled with one of the five jobs (`CORE_INTENTS`),
  the share whose predicted intent starts the right flow (`flow()`, `FLOWS`): order status
  and delay are one flow (both verify the order, then report its status and delay), and
  `inform`, `lookup_order` and `ask_about_order` start that same flow (the rules send them to
  `action_route_job`, whose job is the status one when none is pending); `insult` counts
  for `human_handoff` (the bot answers calmly and offers a person);
- macro-F1 over the five core intents (and with status and delay as one);
- **out-of-scope recognition**: of the messages labelled `out_of_scope`, the share
  predicted `out_of_scope` or `nlu_fallback` (both keep the shopper out of the order
  flows and show the menu), and next to it the strict share predicted `out_of_scope`;
- per-intent precision and recall, and the commonest confusions of core intents.

A TSV with a fourth column (`order_number=WS-1003;email=a@b.com`, empty for none; our
own set, `tools/eval/own.tsv`) is also checked for the details in each message: what
`bot.domain.parsing` reads (as the actions do), what the model's entities hold, and how
many messages that name an order reach an order flow.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bot.domain.parsing import (
    find_details,
    find_order_reference,
    normalise_order_number,
    normalise_postcode,
)

CORE_INTENTS = ("order_status", "delivery_delay", "change_address", "refund_or_reship", "human_handoff")
WISMO = {"order_status": "wismo", "delivery_delay": "wismo"}
#: The flow each predicted intent starts, as data/rules/ says; any other intent starts its own (or none).
#: Status and delay are one flow (verify the order, then its status and delay); `inform` and `lookup_order`
#: go to `action_route_job` too, which picks the status job when no other is pending (so does a follow-up
#: question, `ask_about_order`, which answers it after the check, or the status); abuse (`insult`) is
#: answered calmly with the offer of a person, which a "yes" accepts.
FLOWS = {"order_status": "wismo", "delivery_delay": "wismo", "inform": "wismo", "lookup_order": "wismo",
         "ask_about_order": "wismo", "insult": "human_handoff"}
#: Predictions that keep an out-of-scope message out of every order flow.
KEPT_OUT = ("out_of_scope", "nlu_fallback")
#: Intents whose message the actions read details from (`action_route_job`, loosely).
READS_DETAILS = set(CORE_INTENTS) | {"inform", "lookup_order", "ask_delivery_address"}
#: Intents whose rules start the order check with the details of the message (data/rules/: `action_route_job`,
#: or `action_greet` for a greeting that names an order).
STARTS_ORDER_CHECK = frozenset({"order_status", "delivery_delay", "change_address", "refund_or_reship", "inform",
                                "lookup_order", "ask_delivery_address", "ask_about_order", "greet"})
DETAIL_FIELDS = ("order_number", "tracking_number", "email", "postcode")


@dataclass(frozen=True)
class Row:
    text: str
    intent: str
    source: str = ""
    details: Optional[Dict[str, str]] = None  # None: the file has no details column


def read_rows(path: Path) -> List[Row]:
    """The rows of a TSV in the dev-set format, with the optional fourth column of expected details."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    has_details = bool(rows) and len(rows[0]) >= 4 and rows[0][3] == "details"
    if rows and rows[0][:2] == ["text", "intent"]:
        rows = rows[1:]
    return [Row(r[0], r[1], r[2] if len(r) > 2 else "",
                parse_details(r[3] if len(r) > 3 else "") if has_details else None)
            for r in rows if len(r) >= 2 and r[0].strip()]


def read_tsv(path: Path) -> List[Tuple[str, str]]:
    return [(row.text, row.intent) for row in read_rows(path)]


def parse_details(cell: str) -> Dict[str, str]:
    """`order_number=WS-1003;email=a@b.com` -> {"order_number": "WS-1003", "email": "a@b.com"}."""
    details = {}
    for part in filter(None, (p.strip() for p in cell.split(";"))):
        name, _, value = part.partition("=")
        if name not in DETAIL_FIELDS or not value:
            raise ValueError(f"details column: {part!r} is not one of {DETAIL_FIELDS}=value")
        details[name] = value
    return details


async def parse_all(model: Path, texts: Sequence[str]) -> List[Dict[str, Any]]:
    """Rasa's parse of each text with the trained model."""
    return (await parse_many(model, [texts]))[0]


async def parse_many(model: Path, batches: Sequence[Sequence[str]]) -> List[List[Dict[str, Any]]]:
    """Rasa's parse of each text of each batch, loading the model once."""
    import logging

    from rasa.core.agent import Agent
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.log_utils import configure_structlog

    # Rasa logs every parsed message at debug level; the report is the output.
    configure_logging_and_warnings(logging.ERROR)
    configure_structlog(logging.ERROR)
    agent = Agent.load(str(model))
    results = []
    for texts in batches:
        results.append([await agent.parse_message(text) for text in texts])
    return results


def predicted_intent(parsed: Dict[str, Any]) -> str:
    return (parsed.get("intent") or {}).get("name") or "none"


def top_intent(parsed: Dict[str, Any]) -> Tuple[str, float]:
    """The best real intent and its confidence, whatever the fallback decided."""
    ranking = [r for r in parsed.get("intent_ranking") or [] if r["name"] != "nlu_fallback"]
    return (ranking[0]["name"], float(ranking[0]["confidence"])) if ranking else ("none", 0.0)


def flow(intent: str) -> str:
    """The flow a predicted intent starts: status, delay and `inform` share one."""
    return FLOWS.get(intent, intent)


def job_routing(gold: Sequence[str], predicted: Sequence[str]) -> Tuple[int, int]:
    """(right, total): messages labelled with a job whose prediction starts that job's flow."""
    pairs = [(g, p) for g, p in zip(gold, predicted) if g in CORE_INTENTS]
    return sum(flow(g) == flow(p) for g, p in pairs), len(pairs)


def out_of_scope_recognition(gold: Sequence[str], predicted: Sequence[str]) -> Tuple[int, int, int]:
    """(kept out, predicted out_of_scope, total) over the messages labelled out_of_scope.

    Kept out: predicted `out_of_scope` or `nlu_fallback`; neither starts an order flow.
    """
    outs = [p for g, p in zip(gold, predicted) if g == "out_of_scope"]
    return sum(p in KEPT_OUT for p in outs), sum(p == "out_of_scope" for p in outs), len(outs)


def _share(right: int, total: int) -> Optional[float]:
    return round(right / total, 4) if total else None


def report(gold: Sequence[str], predicted: Sequence[str]) -> Dict[str, Any]:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    strict = sum(g == p for g, p in zip(gold, predicted)) / len(gold)
    routed = sum(WISMO.get(g, g) == WISMO.get(p, p) for g, p in zip(gold, predicted)) / len(gold)
    macro = f1_score(gold, predicted, labels=list(CORE_INTENTS), average="macro", zero_division=0)
    routed_gold = [WISMO.get(g, g) for g in gold]
    routed_pred = [WISMO.get(p, p) for p in predicted]
    routed_labels = ["wismo", "change_address", "refund_or_reship", "human_handoff"]
    macro_routed = f1_score(routed_gold, routed_pred, labels=routed_labels, average="macro", zero_division=0)
    p, r, f, n = precision_recall_fscore_support(gold, predicted, labels=list(CORE_INTENTS), zero_division=0)
    per_intent = {i: {"precision": round(p[k], 3), "recall": round(r[k], 3), "f1": round(f[k], 3),
                      "support": int(n[k])} for k, i in enumerate(CORE_INTENTS)}
    confusion = Counter((g, pr) for g, pr in zip(gold, predicted) if g in CORE_INTENTS and g != pr)
    jobs_right, jobs_total = job_routing(gold, predicted)
    kept_out, recognised, out_total = out_of_scope_recognition(gold, predicted)
    return {
        "messages": len(gold),
        "strict_accuracy": round(strict, 4),
        "job_routing": _share(jobs_right, jobs_total),
        "job_messages": jobs_total,
        "out_of_scope_recognition": _share(kept_out, out_total),
        "out_of_scope_strict": _share(recognised, out_total),
        "out_of_scope_messages": out_total,
        "wismo_routing_accuracy": round(routed, 4),
        "core_macro_f1": round(float(macro), 4),
        "core_macro_f1_wismo_routing": round(float(macro_routed), 4),
        "fallback_rate": round(predicted.count("nlu_fallback") / len(gold), 4),
        "per_intent": per_intent,
        "top_confusions": [{"gold": g, "predicted": pr, "count": c} for (g, pr), c in confusion.most_common(12)],
    }


# --- details: what the actions read, what the model's entities hold --------------------------


def details_read(text: str, intent: str, prefix: str) -> Dict[str, str]:
    """What the bot reads from a message of this intent.

    A job or `inform` goes to `action_route_job`, which reads every detail with
    `find_details(loose=True)`; no other intent reads anything, so there only an
    order reference written as one (`find_order_reference`) would count, and it
    should be absent.
    """
    if intent in READS_DETAILS:
        found = find_details(text, prefix, loose=True)
        return {name: value for name in DETAIL_FIELDS if (value := getattr(found, name))}
    reference = find_order_reference(text, prefix)
    return {"order_number": reference} if reference else {}


def _normalised_entity(name: str, value: str, prefix: str) -> Optional[str]:
    if name == "order_number":
        return normalise_order_number(value, prefix)
    if name == "tracking_number":
        return re.sub(r"[\s-]", "", value).upper()
    if name == "email":
        return value.strip().lower()
    return normalise_postcode(value)


def model_entities(parsed: Dict[str, Any], prefix: str) -> Dict[str, set]:
    """The model's entities (any extractor), normalised as the store keeps them."""
    found: Dict[str, set] = {}
    for entity in parsed.get("entities") or []:
        name = entity.get("entity")
        if name in DETAIL_FIELDS:
            value = _normalised_entity(name, str(entity.get("value")), prefix)
            if value:
                found.setdefault(name, set()).add(value)
    return found


@dataclass
class DetailsScore:
    lines: int = 0
    exact: int = 0
    expected: int = 0
    read: int = 0
    missed: Counter = field(default_factory=Counter)
    false_reads: Counter = field(default_factory=Counter)
    entities_found: int = 0
    named_orders: int = 0
    named_orders_routed: int = 0
    failures: List[Dict[str, Any]] = field(default_factory=list)


def details_report(rows: Sequence[Row], parsed: Sequence[Dict[str, Any]], prefix: str) -> Dict[str, Any]:
    """How well the details in each message are read, by the actions' parsing and by the model.

    - `lines_exact`: lines where the parsing reads exactly the expected details (no more, no less);
    - `details_read`: expected details read with the right value, out of all expected;
    - `model_entities`: expected details that the model's entities hold (normalised);
    - `named_orders_routed`: of the lines naming an order (number or tracking number) that
      should start the order check, those whose predicted intent starts it (`STARTS_ORDER_CHECK`),
      so that the number is read at all.
    """
    score = DetailsScore()
    for row, parse in zip(rows, parsed):
        if row.details is None:
            continue
        score.lines += 1
        read = details_read(row.text, row.intent, prefix)
        entities = model_entities(parse, prefix)
        score.exact += read == row.details
        for name, value in row.details.items():
            score.expected += 1
            if read.get(name) == value:
                score.read += 1
            else:
                score.missed[name] += 1
            score.entities_found += value in entities.get(name, set())
        for name, value in read.items():
            if row.details.get(name) != value:
                score.false_reads[name] += 1
        if {"order_number", "tracking_number"} & row.details.keys() and row.intent in STARTS_ORDER_CHECK:
            score.named_orders += 1
            score.named_orders_routed += predicted_intent(parse) in STARTS_ORDER_CHECK
        if read != row.details:
            score.failures.append({"text": row.text, "expected": row.details, "read": read})
    return {
        "lines": score.lines,
        "lines_exact": _share(score.exact, score.lines),
        "details_expected": score.expected,
        "details_read": _share(score.read, score.expected),
        "model_entities": _share(score.entities_found, score.expected),
        "missed": dict(score.missed),
        "false_reads": dict(score.false_reads),
        "named_orders": score.named_orders,
        "named_orders_routed": _share(score.named_orders_routed, score.named_orders),
        "failures": score.failures,
    }


def _pct(value: Optional[float]) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def render(result: Dict[str, Any]) -> str:
    lines = [
        f"messages: {result['messages']}",
        f"strict intent accuracy:        {result['strict_accuracy']:.3f}",
        f"job routing:                   {_pct(result.get('job_routing'))}   "
        f"({result.get('job_messages', 0)} job messages; status, delay, inform, lookup_order and ask_about_order start one flow)",
        f"core intents macro-F1:         {result['core_macro_f1']:.3f}",
        f"core macro-F1, WISMO routing:  {result['core_macro_f1_wismo_routing']:.3f}",
        f"out-of-scope recognition:      {_pct(result.get('out_of_scope_recognition'))}   "
        f"({result.get('out_of_scope_messages', 0)} out-of-scope messages predicted out_of_scope or nlu_fallback;"
        f" out_of_scope alone {_pct(result.get('out_of_scope_strict')).strip()})",
        f"WISMO routing accuracy (all):  {result['wismo_routing_accuracy']:.3f}",
        f"fallback rate:                 {result['fallback_rate']:.3f}",
        "",
        f"{'intent':<18} {'prec':>6} {'recall':>7} {'f1':>6} {'n':>5}",
    ]
    for intent, row in result["per_intent"].items():
        lines.append(f"{intent:<18} {row['precision']:>6.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {row['support']:>5}")
    lines += ["", "most frequent confusions of core intents (gold -> predicted):"]
    for row in result["top_confusions"]:
        lines.append(f"  {row['gold']:<18} -> {row['predicted']:<18} {row['count']}")
    details = result.get("details")
    if details and details["lines"]:
        lines += [
            "",
            f"details in the messages ({details['lines']} lines, {details['details_expected']} details expected):",
            f"  lines read exactly by the parsing:        {_pct(details['lines_exact'])}",
            f"  details read by the parsing:              {_pct(details['details_read'])}"
            f"   missed {details['missed'] or 'none'}, read wrongly or where there was none "
            f"{details['false_reads'] or 'none'}",
            f"  details held by the model's entities:     {_pct(details['model_entities'])}",
            f"  orders named that start the order check:  {_pct(details['named_orders_routed'])}"
            f"   ({details['named_orders']} messages)",
        ]
    return "\n".join(lines)


def evaluate(model: Path, dataset: Path, out: Path, prefix: str = "WS-") -> Dict[str, Any]:
    return evaluate_many(model, [(dataset, out)], prefix)[0]


def evaluate_many(model: Path, runs: Sequence[Tuple[Path, Path]], prefix: str = "WS-") -> List[Dict[str, Any]]:
    """Score each (dataset, output file) pair with one load of the model; write the details and errors."""
    datasets = [read_rows(dataset) for dataset, _ in runs]
    parsed_sets = asyncio.run(parse_many(model, [[row.text for row in rows] for rows in datasets]))
    results = []
    for (_, out), rows, parsed in zip(runs, datasets, parsed_sets):
        predicted = [predicted_intent(p) for p in parsed]
        result = report([row.intent for row in rows], predicted)
        if any(row.details is not None for row in rows):
            result["details"] = details_report(rows, parsed, prefix)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        errors = [{"text": row.text, "gold": row.intent, "predicted": p}
                  for row, p in zip(rows, predicted) if row.intent != p]
        out.with_name(out.stem + "_errors.json").write_text(json.dumps(errors, indent=2, ensure_ascii=False))
        results.append(result)
    return results


def fallback_table(model: Path, held_out: Path, thresholds: Sequence[float]) -> List[Dict[str, float]]:
    """Core macro-F1, accuracy and fallback rate on a held-out split of our own data, per threshold.

    Used to choose `FallbackClassifier.threshold` without touching the evaluation set.
    """
    from rasa.shared.nlu.training_data.loading import load_data
    from sklearn.metrics import f1_score

    examples = load_data(str(held_out)).intent_examples
    gold = [e.get("intent") for e in examples]
    top = [top_intent(p) for p in asyncio.run(parse_all(model, [e.get("text") for e in examples]))]
    rows = []
    for threshold in thresholds:
        predicted = [name if confidence >= threshold else "nlu_fallback" for name, confidence in top]
        rows.append({
            "threshold": threshold,
            "core_macro_f1": round(float(f1_score(gold, predicted, labels=list(CORE_INTENTS), average="macro",
                                                  zero_division=0)), 4),
            "accuracy": round(sum(g == p for g, p in zip(gold, predicted)) / len(gold), 4),
            "fallback_rate": round(predicted.count("nlu_fallback") / len(gold), 4),
        })
    return rows
