"""Ablations of benchmarks/distill_quality.py: the same model label in two run folders, answer by answer.

An ablation trains a method again with one setting changed (`--set stages.advdistill.training.advdistill.lam=0`) in a
copy of a finished run folder, so the copy's `advdistill` is the ablated model and the original's is the reference;
both were asked the same held-out problems. For each label, on the problems both folders answered, this prints
greedy pass@1 in each folder, the paired difference (ablated minus reference, percentage points, with a 95%
percentile bootstrap over problems: distill_ray.eval.metrics.bootstrap_paired_difference) and the mean tokens of
correct replies, then one JSON line. The report of a single run compares methods; this compares one method's two
versions.

    python benchmarks/compare_runs.py REFERENCE_RUN ABLATED_RUN --labels advdistill,advdistill_s8 [--dev]
    python benchmarks/compare_runs.py REFERENCE_RUN ABLATED_RUN --labels kd --benchmark gsm8k

Exit 2, with one line naming the folder and label, when a folder has no readable answers for a label on that split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and the packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402

from benchmarks.quality_report import (  # noqa: E402
    _cell, difference_cell, model_rows, model_stats, paired_difference, result_folder,
)


class NoAnswers(ValueError):
    """A run folder holds no readable answers of a label on a split."""


def compare(reference: Path, ablated: Path, labels: list[str], split: str, benchmark: str = "arithmetic") -> list[dict]:
    """Per label, on the problems both folders answered: each folder's pass@1 statistics and the paired difference
    ablated - reference (shares, not points). Raises NoAnswers naming the folder and label when one has none."""
    out = []
    for label in labels:
        rows = {}
        for name, folder in (("reference", reference), ("ablated", ablated)):
            where = result_folder(folder, label, split, benchmark)
            try:
                rows[name] = model_rows(folder, label, split, benchmark) if where.is_dir() else []
            except (OSError, pa.ArrowInvalid) as exc:
                raise NoAnswers(f"unreadable answers of {label!r} in {where}: {str(exc).splitlines()[0]}") from None
            if not rows[name]:
                raise NoAnswers(f"no answers of {label!r} on the {split} split in {folder} ({where})")
        shared = set.intersection(*({r["id"] for r in v} for v in rows.values()))
        if not shared:
            raise NoAnswers(f"{reference} and {ablated} share no answered problem for {label!r} on {split}")
        rows = {name: [r for r in v if r["id"] in shared] for name, v in rows.items()}
        out.append({"label": label, "problems": len(shared),
                    "reference": model_stats(rows["reference"]), "ablated": model_stats(rows["ablated"]),
                    "ablated_minus_reference": paired_difference(rows, "ablated", "reference")})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path, help="the run folder with the reference models")
    p.add_argument("ablated", type=Path, help="the run folder with the ablated models (same labels)")
    p.add_argument("--labels", required=True, help="comma list of model labels, e.g. advdistill,advdistill_s8")
    p.add_argument("--dev", action="store_true", help="the dev split's answers, not test")
    p.add_argument("--benchmark", choices=("arithmetic", "gsm8k"), default="arithmetic",
                   help="the runs' problem set (distill_quality.py --benchmark; default arithmetic)")
    args = p.parse_args(argv)
    if args.dev and args.benchmark == "gsm8k":
        p.error("--dev: gsm8k runs have no dev split")
    labels = list(dict.fromkeys(label.strip() for label in args.labels.split(",") if label.strip()))
    if not labels:
        p.error("--labels: no label given")
    try:
        results = compare(args.reference, args.ablated, labels, "dev" if args.dev else "test", args.benchmark)
    except NoAnswers as exc:
        print(f"compare_runs: {exc}", file=sys.stderr)  # the CLI's last line, as argparse's own errors
        return 2
    print("| label | problems | reference pass@1 | ablated pass@1 | ablated - reference, points [95% CI] | "
          "tokens of correct replies, reference / ablated |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ref, abl = r["reference"], r["ablated"]
        tokens = f"{_cell(ref['mean_tokens_correct'])} / {_cell(abl['mean_tokens_correct'])}"
        print(f"| {r['label']} | {r['problems']} | {100 * ref['pass@1']:.1f}% | {100 * abl['pass@1']:.1f}% | "
              f"{difference_cell(r['ablated_minus_reference'])} | {tokens} |")
    split = "dev" if args.dev else "test"
    print(json.dumps({"problem_set": args.benchmark, "split": split, "labels": [r["label"] for r in results],
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
