"""`python -m tools ...`: measuring the assistant (developers' commands, not the shop's).

eval-nlu FILE... [--model M]  measure intent recognition on held-out TSVs (`make eval`)
tune-fallback M F             fallback-threshold table for model M on held-out NLU file F
bench [options]               latency and throughput next to a bare Rasa baseline (`make bench`)
profile [options]             where the Rasa server spends its CPU, sampled with py-spy (`make profile`)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from bot.config import PROJECT_ROOT, Settings, SettingsError, get_settings


def cmd_eval_nlu(settings: Settings, args: argparse.Namespace) -> int:
    from bot.serving.runner import StartupError, latest_model
    from tools.nlu_eval import evaluate_many, render

    datasets = [Path(name) for name in args.dataset]
    for dataset in datasets:
        if not dataset.is_file():
            print(f"{dataset}: no such file (set EVAL_SET to the TSV to measure on)", file=sys.stderr)
            return 2
    try:
        model = Path(args.model) if args.model else latest_model(PROJECT_ROOT / "models")
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if not model.is_file():
        print(f"{model}: no such model file", file=sys.stderr)
        return 2
    # The first set writes results/nlu_eval.json; the others results/nlu_eval_<name>.json.
    outputs = [PROJECT_ROOT / "results" / ("nlu_eval.json" if index == 0 else f"nlu_eval_{dataset.stem}.json")
               for index, dataset in enumerate(datasets)]
    results = evaluate_many(model, list(zip(datasets, outputs)), settings.order_number_prefix)
    for index, (dataset, out, result) in enumerate(zip(datasets, outputs, results)):
        print(("\n" if index else "") + f"NLU evaluation of {model.name} on {dataset}\n" + render(result))
        errors = out.with_name(out.stem + "_errors.json")
        print(f"\nDetails: {out.relative_to(PROJECT_ROOT)}, misclassified messages: {errors.relative_to(PROJECT_ROOT)}")
    return 0


def cmd_tune_fallback(settings: Settings, args: argparse.Namespace) -> int:
    from tools.nlu_eval import fallback_table

    rows = fallback_table(Path(args.model), Path(args.held_out), [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    print("threshold  core macro-F1  accuracy  fallback rate")
    for row in rows:
        print(f"{row['threshold']:>9.1f}  {row['core_macro_f1']:>13.3f}  {row['accuracy']:>8.3f}  "
              f"{row['fallback_rate']:>13.3f}")
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from tools.bench import main

    return main(settings, args)


def cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    from tools.profile import main

    return main(settings, args)


def parser() -> argparse.ArgumentParser:
    from tools import profile
    from tools.bench import add_arguments

    root = argparse.ArgumentParser(prog="python -m tools", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    evaluation = sub.add_parser("eval-nlu", help="measure intent recognition on held-out TSVs")
    evaluation.add_argument("dataset", nargs="+", help="TSVs: text, intent[, source[, details]]")
    evaluation.add_argument("--model", help="the model to measure (default: the newest in models/)")
    evaluation.set_defaults(func=cmd_eval_nlu)
    tune = sub.add_parser("tune-fallback", help="fallback threshold table on a held-out split of data/nlu")
    tune.add_argument("model")
    tune.add_argument("held_out")
    tune.set_defaults(func=cmd_tune_fallback)
    bench = sub.add_parser("bench", help="latency and throughput next to a bare Rasa baseline")
    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)
    sampling = sub.add_parser("profile", help="where the Rasa server spends its CPU under load (py-spy)")
    profile.add_arguments(sampling)
    sampling.set_defaults(func=cmd_profile)
    return root


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return int(args.func(settings, args))


if __name__ == "__main__":
    sys.exit(main())
