"""`make profile` reads py-spy's raw stacks into per-function shares."""

from __future__ import annotations

from tools.profile import parse_raw, render

RAW = """\
main (app.py:10);handle (app.py:20);parse (nlu.py:5) 30
main (app.py:10);handle (app.py:21);save (store.py:7);commit (db.py:3) 50
main (app.py:10);handle (app.py:20);parse (nlu.py:6) 20
not a stack line
"""


def test_shares_are_per_function_whatever_the_line():
    inclusive, own, total = parse_raw(RAW.splitlines())
    assert total == 100
    assert inclusive["handle (app.py)"] == 100
    assert inclusive["parse (nlu.py)"] == 50
    assert inclusive["save (store.py)"] == 50
    assert own == {"parse (nlu.py)": 50, "commit (db.py)": 50}


def test_the_report_leaves_out_frames_on_every_stack():
    inclusive, own, total = parse_raw(RAW.splitlines())
    report = render(inclusive, own, total, top=10)
    assert "100 samples." in report
    assert " 50.0%  save (store.py)" in report
    assert "main (app.py)" not in report  # on every stack: says nothing
    assert render(inclusive, own, 0, top=10).startswith("No samples")
