"""Intent recognition measured on wording the team did not write.

`make eval` runs the trained model over a held-out TSV (`text<TAB>intent[<TAB>source]`)
and prints strict accuracy, macro-F1 over the five core intents, "WISMO routing"
accuracy (order status and delay count as one, since both flows verify the
order and report its status and delay) and the confusion between core intents.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

CORE_INTENTS = ("order_status", "delivery_delay", "change_address", "refund_or_reship", "human_handoff")
WISMO = {"order_status": "wismo", "delivery_delay": "wismo"}


def read_tsv(path: Path) -> List[Tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    if rows and rows[0][:2] == ["text", "intent"]:
        rows = rows[1:]
    return [(r[0], r[1]) for r in rows if len(r) >= 2 and r[0].strip()]


async def parse_all(model: Path, texts: Sequence[str]) -> List[Dict[str, Any]]:
    """Rasa's parse of each text with the trained model."""
    import logging

    from rasa.core.agent import Agent
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.log_utils import configure_structlog

    # Rasa logs every parsed message at debug level; the report is the output.
    configure_logging_and_warnings(logging.ERROR)
    configure_structlog(logging.ERROR)
    agent = Agent.load(str(model))
    return [await agent.parse_message(text) for text in texts]


def predicted_intent(parsed: Dict[str, Any]) -> str:
    return (parsed.get("intent") or {}).get("name") or "none"


def top_intent(parsed: Dict[str, Any]) -> Tuple[str, float]:
    """The best real intent and its confidence, whatever the fallback decided."""
    ranking = [r for r in parsed.get("intent_ranking") or [] if r["name"] != "nlu_fallback"]
    return (ranking[0]["name"], float(ranking[0]["confidence"])) if ranking else ("none", 0.0)


def report(gold: Sequence[str], predicted: Sequence[str]) -> Dict[str, object]:
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
    return {
        "messages": len(gold),
        "strict_accuracy": round(strict, 4),
        "wismo_routing_accuracy": round(routed, 4),
        "core_macro_f1": round(float(macro), 4),
        "core_macro_f1_wismo_routing": round(float(macro_routed), 4),
        "fallback_rate": round(predicted.count("nlu_fallback") / len(gold), 4),
        "per_intent": per_intent,
        "top_confusions": [{"gold": g, "predicted": pr, "count": c} for (g, pr), c in confusion.most_common(12)],
    }


def render(result: Dict[str, object]) -> str:
    lines = [
        f"messages: {result['messages']}",
        f"strict intent accuracy:        {result['strict_accuracy']:.3f}",
        f"WISMO routing accuracy:        {result['wismo_routing_accuracy']:.3f}",
        f"core intents macro-F1:         {result['core_macro_f1']:.3f}",
        f"core macro-F1, WISMO routing:  {result['core_macro_f1_wismo_routing']:.3f}",
        f"fallback rate:                 {result['fallback_rate']:.3f}",
        "",
        f"{'intent':<18} {'prec':>6} {'recall':>7} {'f1':>6} {'n':>5}",
    ]
    for intent, row in result["per_intent"].items():  # type: ignore[union-attr]
        lines.append(f"{intent:<18} {row['precision']:>6.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {row['support']:>5}")
    lines += ["", "most frequent confusions of core intents (gold -> predicted):"]
    for row in result["top_confusions"]:  # type: ignore[union-attr]
        lines.append(f"  {row['gold']:<18} -> {row['predicted']:<18} {row['count']}")
    return "\n".join(lines)


def evaluate(model: Path, dataset: Path, out: Path) -> Dict[str, object]:
    rows = read_tsv(dataset)
    predicted = [predicted_intent(p) for p in asyncio.run(parse_all(model, [text for text, _ in rows]))]
    result = report([intent for _, intent in rows], predicted)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    errors = [{"text": t, "gold": g, "predicted": p} for (t, g), p in zip(rows, predicted) if g != p]
    out.with_name(out.stem + "_errors.json").write_text(json.dumps(errors, indent=2, ensure_ascii=False))
    return result


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
