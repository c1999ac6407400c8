"""Benchmark (issue 14): the grader's throughput and latency on a mixed corpus of reasoning-model replies.

Grades the same deterministic corpus twice in this process, first to warm up (sympy's import and caches),
then timed: items/s and per-item latency percentiles of `distill_ray.grading.grader.grade`, overall and per
kind of reply. The kinds mimic what real teachers write: a boxed integer (the common case, decided without
sympy), a boxed fraction or surd, a think block with a draft box, an `<answer>` block, GSM8K `#### N` text,
a sentence in math mode, a set, a truncated reply. The reward service runs this same function in its
verifier workers; `benchmarks/reward_throughput.py` measures the service end to end.

    python benchmarks/grader_throughput.py            # 2,000 replies
    python benchmarks/grader_throughput.py --quick    # 200 replies

Prints a table, then as the last line one JSON object (items, items_per_s, p50/p99 latency in ms, the
share graded correct, and per kind the same figures).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from bench_common import percentile  # this folder is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = {
    "boxed_integer": lambda r, a: (f"We add them up: {a - 3} + 3 = {a}. So the answer is \\boxed{{{a}}}.", str(a)),
    "boxed_fraction": lambda r, a: (f"Dividing, we get \\boxed{{\\frac{{{a}}}{{{a + 1}}}}}.", f"{a}/{a + 1}"),
    "boxed_surd": lambda r, a: (f"The side is \\boxed{{\\sqrt{{{4 * a}}}}}.", f"2\\sqrt{{{a}}}"),
    "think_draft": lambda r, a: (f"<think>Maybe \\boxed{{{a + 1}}}? No: it is {a}.</think>\nThe result is {a}.",
                                 str(a)),
    "answer_block": lambda r, a: (f"<think>{a} apples</think><answer>\\boxed{{{a}}}</answer>", str(a)),
    "gsm8k_marker": lambda r, a: (f"She has {a} in total.\n#### {a}\nHope these 2 steps help.", str(a)),
    "math_sentence": lambda r, a: (f"Therefore $x \\geq {a}$ is the solution.", f"x >= {a}"),
    "set": lambda r, a: (f"\\boxed{{{a}}},\\boxed{{{a + 1}}}", f"{{{a},{a + 1}}}"),
    "truncated": lambda r, a: (f"Therefore the area is \\boxed{{{a}\\sqrt{{", str(a)),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000, help="replies graded (spread evenly over the kinds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 replies: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.items = 200
    return args


def corpus(items: int, seed: int) -> list[tuple[str, str, str]]:
    """(kind, reply, reference) rows, the kinds in turn, values from a seeded generator."""
    rng = random.Random(seed)
    names = list(KINDS)
    return [(names[i % len(names)], *KINDS[names[i % len(names)]](rng, rng.randint(2, 999))) for i in range(items)]


def timed_grades(rows: list[tuple[str, str, str]]) -> tuple[list[float], list[bool | None]]:
    from distill_ray.grading.grader import grade

    seconds, verdicts = [], []
    for _, reply, reference in rows:
        started = time.perf_counter()
        verdicts.append(grade(reply, reference).correct)
        seconds.append(time.perf_counter() - started)
    return seconds, verdicts


def summary(seconds: list[float], verdicts: list[bool | None]) -> dict:
    total = sum(seconds)
    return {"items": len(seconds), "items_per_s": round(len(seconds) / total, 1) if total else None,
            "p50_ms": round(percentile(seconds, 50) * 1000, 3), "p99_ms": round(percentile(seconds, 99) * 1000, 3),
            "correct_share": round(sum(v is True for v in verdicts) / len(verdicts), 3)}  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = corpus(args.items, args.seed)
    timed_grades(rows[: len(KINDS) * 3])  # warm-up: imports, sympy caches
    seconds, verdicts = timed_grades(rows)
    result = summary(seconds, verdicts)
    result["per_kind"] = {}
    print(f"{'kind':<16}{'items':>7}{'items/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'correct':>9}")
    for kind in KINDS:
        idx = [i for i, row in enumerate(rows) if row[0] == kind]
        part = summary([seconds[i] for i in idx], [verdicts[i] for i in idx])
        result["per_kind"][kind] = part
        print(f"{kind:<16}{part['items']:>7}{part['items_per_s']:>10}{part['p50_ms']:>9}{part['p99_ms']:>9}"
              f"{part['correct_share']:>9}")  # fmt: skip
    print(f"{'all':<16}{result['items']:>7}{result['items_per_s']:>10}{result['p50_ms']:>9}{result['p99_ms']:>9}"
          f"{result['correct_share']:>9}")  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
