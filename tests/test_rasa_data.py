"""The Rasa training data and domain are consistent, and never trained on what measures them."""

import csv
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

from bot.domain.parsing import EMAIL, find_order_number, normalise_order_number
from tools.nlu_eval import DETAIL_FIELDS, details_read, read_rows

from .helpers.servers import ROOT

NLU = ROOT / "data" / "nlu"
OWN_SET = ROOT / "tools" / "eval" / "own.tsv"
SHARED_SETS = [ROOT.parent / "shared" / "eval" / "dev.tsv", ROOT.parent / "shared" / "eval" / "dev_fr_es.tsv"]
#: Lines this short ("yes", "track my order", "thank you so much") are stock phrases any team writes;
#: longer ones in the training data must not be lines of the evaluation sets.
MIN_WORDS_NOT_SHARED = 4
ANNOTATION = re.compile(r"\[([^\]]*)\](?:\(([^)]*)\)|\{([^}]*)\})")


def normalised(text: str) -> str:
    """Lower case, without apostrophes, punctuation and extra spaces: how two lines are compared."""
    return re.sub(r"[^a-z0-9@#]+", " ", re.sub(r"['’]", "", text.lower())).strip()


def annotated_examples() -> List[Tuple[str, str, str]]:
    """(file, intent, example as written) of every training example in data/nlu."""
    examples = []
    for path in sorted(NLU.glob("*.yml")):
        for block in yaml.safe_load(path.read_text(encoding="utf-8")).get("nlu", []):
            if "intent" not in block:
                continue
            for line in block["examples"].splitlines():
                line = line.strip()
                assert line.startswith("- "), f"{path.name}: {line!r} is not an example line"
                examples.append((path.name, block["intent"], line[2:]))
    return examples


def training_examples() -> List[Tuple[str, str, str]]:
    """(file, intent, text without annotations) of every training example in data/nlu."""
    return [(name, intent, ANNOTATION.sub(lambda m: m.group(1), example))
            for name, intent, example in annotated_examples()]


def annotations() -> List[Tuple[str, str, str]]:
    """(file, entity, value) of every annotated entity in data/nlu."""
    found = []
    for name, _, example in annotated_examples():
        for match in ANNOTATION.finditer(example):
            value, entity, options = match.groups()
            found.append((name, entity if entity is not None else yaml.safe_load("{" + options + "}")["entity"], value))
    return found


def eval_lines(path: Path) -> List[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [r[0] for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r and r[0] != "text"]


def test_no_training_example_is_a_line_of_the_shared_evaluation_sets():
    """The dev sets measure; a model that has seen their lines proves nothing."""
    present = [path for path in SHARED_SETS if path.is_file()]
    if not present:
        pytest.skip("../shared/eval/ is not here")
    shared = {normalised(line) for path in present for line in eval_lines(path)
              if len(normalised(line).split()) >= MIN_WORDS_NOT_SHARED}
    copied = [(name, text) for name, _, text in training_examples() if normalised(text) in shared]
    assert not copied, f"training lines that are evaluation lines: {copied}"


def test_no_training_example_is_a_line_of_our_own_set():
    """Our own set is written apart from the training data: no line of it, however short, is trained on."""
    own = {normalised(line) for line in eval_lines(OWN_SET)}
    copied = [(name, text) for name, _, text in training_examples() if normalised(text) in own]
    assert not copied, f"training lines that are lines of tools/eval/own.tsv: {copied}"


def test_no_example_is_given_two_intents():
    seen: Dict[str, str] = {}
    clashes = []
    for name, intent, text in training_examples():
        key = normalised(text)
        if seen.setdefault(key, intent) != intent:
            clashes.append((name, text, seen[key], intent))
    assert not clashes


def test_our_own_set_is_well_formed():
    """~80-150 lines, every intent one of the domain's, every details cell a known field."""
    domain = yaml.safe_load((ROOT / "domain.yml").read_text(encoding="utf-8"))
    rows = read_rows(OWN_SET)
    assert 80 <= len(rows) <= 150
    assert all(row.source == "own" for row in rows)
    intents = {next(iter(i)) if isinstance(i, dict) else i for i in domain["intents"]}
    assert {row.intent for row in rows} <= intents
    assert all(row.details is not None and set(row.details) <= set(DETAIL_FIELDS) for row in rows)
    assert len({row.text for row in rows}) == len(rows), "a line is in the set twice"


def test_the_parsing_reads_the_details_of_our_own_set():
    """Every order number, tracking number, email and postcode of tools/eval/own.tsv is read, and nothing else."""
    wrong = [(row.text, row.details, read) for row in read_rows(OWN_SET)
             if (read := details_read(row.text, row.intent, "WS-")) != row.details]
    assert not wrong


def test_annotated_details_are_what_the_parsing_reads():
    """An order number annotated in the training data is one the actions would read; an email is an email."""
    for name, entity, value in annotations():
        if entity == "order_number":
            assert normalise_order_number(value, "WS-") or find_order_number(value, "WS-"), (name, value)
        elif entity == "email":
            assert EMAIL.fullmatch(value), (name, value)


@pytest.mark.parametrize(
    "entity, text, value",
    [
        ("order_number", "where is ws 1012", "ws 1012"),
        ("order_number", "#WS-1012 please", "#WS-1012"),
        ("order_number", "Order no. 1234 status?", "1234"),
        ("order_number", "track order #1043", "#1043"),
        ("tracking_number", "tracking 1Z 999 AA1 01 2345 6784", "1Z 999 AA1 01 2345 6784"),
        ("tracking_number", "JVGL06290145678912345678", "JVGL06290145678912345678"),
        ("email", "it's jane.doe@example.com", "jane.doe@example.com"),
        ("postcode", "ws 1018 and my postcode is 1015 CW", "1015 CW"),
        ("postcode", "zip 10961", "10961"),
    ],
)
def test_regexes_extract_the_details(entity, text, value):
    """data/nlu/regex.yml, as the (case-sensitive) RegexEntityExtractor runs it, finds each detail."""
    found = [m.group(0) for pattern in regexes(entity) for m in re.finditer(pattern, text)]
    assert value in found


@pytest.mark.parametrize(
    "text",
    ["call me on 0612345678", "it cost €1043.50", "where is 1043 is it late", "news 1012", "I ordered 300 mugs"],
)
def test_regexes_leave_other_numbers_alone(text):
    """No order number or postcode entity in a phone number, a price, "1043 is" or a word ending in ws."""
    for entity in ("order_number", "postcode"):
        assert not [m.group(0) for pattern in regexes(entity) for m in re.finditer(pattern, text)], (entity, text)


def regexes(entity: str) -> List[str]:
    blocks = yaml.safe_load((NLU / "regex.yml").read_text(encoding="utf-8"))["nlu"]
    return [line[2:] for block in blocks if block.get("regex") == entity for line in block["examples"].splitlines()
            if line.startswith("- ")]


@pytest.mark.slow  # `rasa data validate` loads Rasa and reads all the training data
def test_rasa_data_validate_passes_without_warnings():
    """`rasa data validate --fail-on-warnings` accepts data/, domain.yml and config.yml."""
    rasa = Path(sys.executable).parent / "rasa"
    result = subprocess.run([str(rasa), "data", "validate", "--fail-on-warnings"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
