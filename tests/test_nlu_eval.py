"""`make eval`: the figures are computed as the README describes them."""

from __future__ import annotations

import pytest

from tools.nlu_eval import (
    FLOWS,
    STARTS_ORDER_CHECK,
    Row,
    details_read,
    details_report,
    evaluate,
    flow,
    job_routing,
    model_entities,
    out_of_scope_recognition,
    parse_details,
    predicted_intent,
    read_rows,
    render,
    report,
    top_intent,
)

from .helpers.servers import MODEL, ROOT


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


@pytest.mark.parametrize(
    "gold, predicted, right",
    [
        ("order_status", "order_status", True),
        ("order_status", "delivery_delay", True),  # one flow: verify, then status and delay
        ("delivery_delay", "order_status", True),
        ("order_status", "inform", True),  # inform starts the same flow (action_route_job, status job)
        ("change_address", "inform", False),  # ... which is not the address flow
        ("refund_or_reship", "delivery_delay", False),
        ("human_handoff", "nlu_fallback", False),
        ("change_address", "change_address", True),
        ("order_status", "lookup_order", True),  # finding the order by email and postcode, then its status
        ("human_handoff", "insult", True),  # abuse is answered with the offer of a person
        ("change_address", "ask_delivery_address", False),  # shows the address, changes nothing
    ],
)
def test_job_routing_of_one_message(gold, predicted, right):
    assert (flow(gold) == flow(predicted)) is right
    assert job_routing([gold], [predicted]) == (int(right), 1)


def test_job_routing_counts_only_the_five_jobs():
    """Of the messages labelled with a job, the share that starts the right flow; other labels do not count."""
    gold = ["order_status", "delivery_delay", "change_address", "refund_or_reship", "human_handoff",
            "greet", "out_of_scope", "inform"]
    predicted = ["delivery_delay", "inform", "order_status", "refund_or_reship", "out_of_scope",
                 "order_status", "order_status", "order_status"]
    assert job_routing(gold, predicted) == (3, 5)
    result = report(gold, predicted)
    assert result["job_routing"] == 0.6
    assert result["job_messages"] == 5


def test_out_of_scope_recognition_counts_the_fallback_as_kept_out():
    """Of the out-of-scope messages: predicted out_of_scope or nlu_fallback (kept out), and out_of_scope alone."""
    gold = ["out_of_scope"] * 5 + ["order_status"]
    predicted = ["out_of_scope", "out_of_scope", "nlu_fallback", "order_status", "greet", "out_of_scope"]
    assert out_of_scope_recognition(gold, predicted) == (3, 2, 5)
    result = report(gold, predicted)
    assert result["out_of_scope_recognition"] == 0.6
    assert result["out_of_scope_strict"] == 0.4
    assert result["out_of_scope_messages"] == 5


def test_a_set_without_jobs_or_out_of_scope_has_no_share():
    result = report(["greet"], ["greet"])
    assert result["job_routing"] is None and result["out_of_scope_recognition"] is None
    assert "n/a" in render(result)


def rules_by_intent():
    """{intent: [the actions of each rule that starts with that intent, outside any form]}."""
    import yaml

    found = {}
    for path in sorted((ROOT / "data" / "rules").glob("*.yml")):
        for rule in yaml.safe_load(path.read_text(encoding="utf-8")).get("rules", []):
            steps = rule.get("steps", [])
            if rule.get("condition") or not steps or "intent" not in steps[0]:
                continue
            found.setdefault(steps[0]["intent"], []).append([s["action"] for s in steps[1:] if "action" in s])
    return found


def test_flows_follow_the_rules():
    """Each intent counted for a job's flow, or as starting the order check, starts it in data/rules/."""
    rules = rules_by_intent()
    starts_check = {"action_route_job", "action_greet"}
    for intent in STARTS_ORDER_CHECK:
        assert any(actions and actions[0] in starts_check for actions in rules.get(intent, [])), intent
    for intent, route in FLOWS.items():
        if route == "wismo":
            assert intent in STARTS_ORDER_CHECK
        if route == "human_handoff":
            assert any("utter_offer_human" in actions or "action_handoff" in actions
                       for actions in rules.get(intent, [])), intent


def test_top_intent_looks_past_the_fallback():
    """The threshold table needs the best real intent even when the fallback won."""
    parsed = {"intent": {"name": "nlu_fallback", "confidence": 0.4},
              "intent_ranking": [{"name": "nlu_fallback", "confidence": 0.4},
                                 {"name": "order_status", "confidence": 0.35}]}
    assert predicted_intent(parsed) == "nlu_fallback"
    assert top_intent(parsed) == ("order_status", 0.35)


def test_details_column():
    assert parse_details("order_number=WS-1003;email=a@b.com") == {"order_number": "WS-1003", "email": "a@b.com"}
    assert parse_details("") == {}
    with pytest.raises(ValueError):
        parse_details("phone=0612345678")


def test_read_rows_with_and_without_details(tmp_path):
    with_details = tmp_path / "own.tsv"
    with_details.write_text("text\tintent\tsource\tdetails\nwhere is ws 1003\torder_status\town\torder_number=WS-1003\n"
                            "hello\tgreet\town\t\n")
    assert read_rows(with_details) == [Row("where is ws 1003", "order_status", "own", {"order_number": "WS-1003"}),
                                       Row("hello", "greet", "own", {})]
    plain = tmp_path / "dev.tsv"
    plain.write_text("text\tintent\tsource\nhello\tgreet\tclinc\n")
    assert read_rows(plain) == [Row("hello", "greet", "clinc", None)]


def test_details_are_read_as_the_actions_read_them():
    """A job or inform reads every detail loosely; any other intent reads nothing but an order reference."""
    assert details_read("where's 1043, jane@x.com", "order_status", "WS-") == {
        "order_number": "WS-1043", "email": "jane@x.com"}
    assert details_read("is 1009 a prime number", "out_of_scope", "WS-") == {}
    assert details_read("hi, where is ws 1003", "greet", "WS-") == {"order_number": "WS-1003"}


def test_model_entities_are_normalised():
    parsed = {"entities": [{"entity": "order_number", "value": "#WS-1012"},
                           {"entity": "tracking_number", "value": "1Z 999 AA1 01 2345 6784"},
                           {"entity": "email", "value": "Jane@Example.com"},
                           {"entity": "postcode", "value": "1015cw"},
                           {"entity": "claim_reason", "value": "damaged"}]}
    assert model_entities(parsed, "WS-") == {"order_number": {"WS-1012"}, "tracking_number": {"1Z999AA10123456784"},
                                             "email": {"jane@example.com"}, "postcode": {"1015 CW"}}


def test_details_report_on_a_hand_made_prediction_list():
    """Exact lines, details read, the model's entities and named orders that reach a flow."""
    rows = [
        Row("where is ws 1003", "order_status", "own", {"order_number": "WS-1003"}),
        Row("ws 1012 jane@x.com", "inform", "own", {"order_number": "WS-1012", "email": "jane@x.com"}),
        Row("call me on 0612345678, it's late", "delivery_delay", "own", {}),
        Row("where is order 77", "order_status", "own", {"order_number": "WS-77"}),  # too short: missed
        Row("what is 15 times 230", "out_of_scope", "own", {}),
        Row("no details column", "greet", "dev", None),  # not counted
    ]
    parsed = [
        {"intent": {"name": "nlu_fallback"}, "entities": [{"entity": "order_number", "value": "ws 1003"}]},
        {"intent": {"name": "inform"}, "entities": [{"entity": "email", "value": "jane@x.com"}]},
        {"intent": {"name": "delivery_delay"}, "entities": []},
        {"intent": {"name": "order_status"}, "entities": []},
        {"intent": {"name": "out_of_scope"}, "entities": []},
        {"intent": {"name": "greet"}, "entities": []},
    ]
    result = details_report(rows, parsed, "WS-")
    assert result["lines"] == 5
    assert result["lines_exact"] == 0.8
    assert result["details_expected"] == 4
    assert result["details_read"] == 0.75
    assert result["missed"] == {"order_number": 1}
    assert result["false_reads"] == {}
    assert result["model_entities"] == 0.5  # WS-1003 and the email
    assert result["named_orders"] == 3 and result["named_orders_routed"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["failures"] == [{"text": "where is order 77", "expected": {"order_number": "WS-77"}, "read": {}}]
    assert "details read by the parsing" in render({**report(["greet"], ["greet"]), "details": result})


@pytest.mark.slow  # loads the trained model
def test_evaluate_runs_the_trained_model_over_a_tsv(tmp_path):
    """A TSV in the dev-set format is scored end to end and the details are written."""
    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    dataset = tmp_path / "mini.tsv"
    dataset.write_text("text\tintent\tsource\tdetails\nhello there\tgreet\tours\t\n"
                       "I want to change my delivery address\tchange_address\tours\t\n"
                       "where is WS-1003\torder_status\tours\torder_number=WS-1003\n")
    result = evaluate(MODEL, dataset, tmp_path / "out" / "eval.json")
    assert result["messages"] == 3
    assert result["per_intent"]["change_address"]["recall"] == pytest.approx(1.0)
    assert result["details"]["details_read"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "eval.json").is_file() and (tmp_path / "out" / "eval_errors.json").is_file()
