"""`make eval`: the figures are computed as the README describes them."""

from __future__ import annotations

import pytest

from tools.nlu_eval import evaluate, predicted_intent, report, top_intent

from .helpers.servers import MODEL


def test_report_counts_status_and_delay_as_one_route():
    """Strict accuracy punishes status<->delay mix-ups; WISMO routing does not."""
    gold = ["order_status", "delivery_delay", "refund_or_reship", "greet"]
    predicted = ["delivery_delay", "delivery_delay", "refund_or_reship", "nlu_fallback"]
    result = report(gold, predicted)
    assert result["strict_accuracy"] == 0.5
    assert result["wismo_routing_accuracy"] == 0.75
    assert result["fallback_rate"] == 0.25
    assert result["per_intent"]["order_status"]["recall"] == 0.0
    assert result["top_confusions"] == [{"gold": "order_status", "predicted": "delivery_delay", "count": 1}]


def test_top_intent_looks_past_the_fallback():
    """The threshold table needs the best real intent even when the fallback won."""
    parsed = {"intent": {"name": "nlu_fallback", "confidence": 0.4},
              "intent_ranking": [{"name": "nlu_fallback", "confidence": 0.4},
                                 {"name": "order_status", "confidence": 0.35}]}
    assert predicted_intent(parsed) == "nlu_fallback"
    assert top_intent(parsed) == ("order_status", 0.35)


@pytest.mark.slow  # loads the trained model
def test_evaluate_runs_the_trained_model_over_a_tsv(tmp_path):
    """A TSV in the dev-set format is scored end to end and the details are written."""
    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    dataset = tmp_path / "mini.tsv"
    dataset.write_text("text\tintent\tsource\nhello there\tgreet\tours\n"
                       "I want to change my delivery address\tchange_address\tours\n")
    result = evaluate(MODEL, dataset, tmp_path / "out" / "eval.json")
    assert result["messages"] == 2
    assert result["per_intent"]["change_address"]["recall"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "eval.json").is_file() and (tmp_path / "out" / "eval_errors.json").is_file()
