"""The report of benchmarks/distill_quality.py, and the curriculum's difficulty labels it derives between its runs.

Reads the eval stage's per-reply rows (`<out>/eval/results/<model>/<problem set>_<split>/`, Parquet) and the ledger
(train steps and seconds per stage); the statistics are the pure functions of distill_ray/eval/metrics.py (Wilson
interval, paired bootstraps of the gap closed and of each method's difference from sft_all). Writes report.md,
report.json and two PNG plots into `<out>/`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# one result folder per problem set and split (arithmetic_test, gsm8k_test), so the dev answers (choosing settings)
# and the test answers are both kept
BENCHMARK = "{benchmark}_{split}"
ROW_COLUMNS = ["id", "correct", "completion_tokens", "finish_reason"]
LEVELS = ("easy", "medium", "hard")
DIFFICULTY_SOURCE = ("response length: the kept teacher replies ranked by completion tokens, shortest third easy, "
                     "longest third hard, the rest medium (the judge needs a teacher that can grade; a 135M "
                     "one cannot)")  # fmt: skip
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 1000, 0
REFERENCE = "sft_all"  # the bar for every other method: AdvDistill, KD, DPO-after-SFT >= SFT
# The trained methods, and how a model label names its training seed (distill_quality.py, "Training seeds").
METHODS = ("sft_all", "sft_best", "advdistill", "curriculum", "kd", "dpo", "opd")
SEED = 7  # the default training seed: its stages and models keep the plain method name
SEEDED = re.compile(r"^(?P<method>.+)_s(?P<seed>\d+)$")  # another training seed's label: kd_s8


def seeded(method: str, seed: int) -> str:
    """The stage (and model label) of `method` trained with `seed`: the plain name at SEED, `<method>_s<seed>` else."""
    return method if seed == SEED else f"{method}_s{seed}"


def method_seed(label: str) -> tuple[str, int | None]:
    """(method, training seed) of a trained stage or model label; (label, None) for anything else (generate, eval,
    base, teacher)."""
    if label in METHODS:
        return label, SEED
    match = SEEDED.match(label)
    if match and match["method"] in METHODS:
        return match["method"], int(match["seed"])
    return label, None


def reference_of(label: str) -> str:
    """The model `label` is compared with: sft_all trained with the same seed (dpo and opd start from it)."""
    method, seed = method_seed(label)
    return REFERENCE if seed is None else seeded(REFERENCE, seed)


def length_terciles(tokens: list[int]) -> list[str]:
    """easy / medium / hard by rank of length (ties by position): the proxy the curriculum filters on. The shortest
    floor(n/3) are easy, the longest floor(n/3) hard, the rest medium, so medium (the curriculum's first stage) is
    never empty when there is a row at all."""
    order = sorted(range(len(tokens)), key=lambda i: (tokens[i], i))
    third = len(tokens) // 3
    labels = [""] * len(tokens)
    for rank, i in enumerate(order):
        labels[i] = "easy" if rank < third else "hard" if rank >= len(tokens) - third else "medium"
    return labels


def difficulty_rows(kept_dir: Path, dest: Path) -> dict[str, int]:
    """Write the kept rows with a `difficulty` column (`length_terciles`) to `dest`; returns rows per level."""
    table = pq.read_table(kept_dir)
    labels = length_terciles([int(t or 0) for t in table["completion_tokens"].to_pylist()])
    dest.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.append_column("difficulty", pa.array(labels, pa.string())), dest)
    return {level: labels.count(level) for level in LEVELS}


def result_folder(out: Path, label: str, split: str, benchmark: str = "arithmetic") -> Path:
    """Where the eval stage of the run in `out` stored `label`'s answers on one split of a problem set."""
    return out / "eval" / "results" / label / BENCHMARK.format(benchmark=benchmark, split=split)


def model_rows(out: Path, label: str, split: str, benchmark: str = "arithmetic") -> list[dict]:
    folder = result_folder(out, label, split, benchmark)
    return pq.read_table(folder, columns=ROW_COLUMNS).to_pylist()


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def model_stats(rows: list[dict]) -> dict:
    """Greedy pass@1 (one reply per problem) with its 95% Wilson interval, reply lengths, share cut at the cap."""
    from distill_ray.eval.metrics import wilson_interval

    n = len(rows)
    right = [r for r in rows if r["correct"] is True]
    low, high = wilson_interval(len(right), n) if n else (None, None)
    return {
        "n": n, "correct": len(right), "pass@1": round(len(right) / n, 4) if n else None,
        "low": None if low is None else round(low, 4), "high": None if high is None else round(high, 4),
        "mean_tokens_correct": _mean([r["completion_tokens"] for r in right]),
        "mean_tokens_incorrect": _mean([r["completion_tokens"] for r in rows if r["correct"] is not True]),
        "cap_share": round(sum(r["finish_reason"] == "length" for r in rows) / n, 4) if n else None,
    }  # fmt: skip


def aligned_correctness(rows: dict[str, list[dict]], names: list[str]) -> list[list[bool]] | None:
    """Each named model's correctness on the problems all of them answered, in one problem order (what the paired
    bootstraps resample), or None when they share no problem."""
    by_id = {name: {r["id"]: r["correct"] is True for r in rows[name]} for name in names}
    ids = sorted(set.intersection(*(set(v) for v in by_id.values())))
    return [[by_id[name][i] for i in ids] for name in names] if ids else None


def paired_gap(rows: dict[str, list[dict]], label: str) -> dict | None:
    """Gap closed of `label` between base and teacher, bootstrapped over the problems all three answered."""
    from distill_ray.eval.metrics import bootstrap_gap_closed

    arrays = aligned_correctness(rows, [label, "base", "teacher"])
    return bootstrap_gap_closed(*arrays, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED) if arrays else None


def paired_difference(rows: dict[str, list[dict]], label: str, reference: str) -> dict | None:
    """pass@1 of `label` minus `reference`'s, bootstrapped over the problems both answered; None when `label` is the
    reference, either was not evaluated or they share no problem."""
    from distill_ray.eval.metrics import bootstrap_paired_difference

    if label == reference or reference not in rows or label not in rows:
        return None
    arrays = aligned_correctness(rows, [label, reference])
    return bootstrap_paired_difference(*arrays, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED) if arrays else None


def build_report(args: argparse.Namespace, out: Path, ledger: dict) -> dict:
    from distill_ray.eval.plots import plot_length_histograms, plot_pass_intervals

    split = "dev" if args.dev else "test"
    labels = list(ledger["stages"]["eval"]["metrics"]["models"])
    rows = {label: model_rows(out, label, split, args.benchmark) for label in labels}
    table = []
    for label in labels:
        stage = ledger["stages"].get(label, {})
        trained = label not in ("base", "teacher")
        gap = paired_gap(rows, label) if trained else None
        versus = paired_difference(rows, label, reference_of(label)) if trained else None
        table.append({"model": label, **model_stats(rows[label]), "gap_closed": gap, f"vs_{REFERENCE}": versus,
                      "train_steps": (stage.get("metrics") or {}).get("steps"),
                      "train_seconds": stage.get("seconds"), "train_evals": (stage.get("metrics") or {}).get("evals")})
    settings = {k: getattr(args, k) for k in ("student", "teacher", "methods", "train_problems", "eval_problems",
                                               "samples", "temperatures", "max_new_tokens", "steps", "lr",
                                               "dpo_lr", "opd_lr", "batch_size", "seeds", "quick", "set")}  # fmt: skip
    curriculum = ledger["stages"].get("difficulty", {}).get("metrics") if "curriculum" in args.methods else None
    report = {"problem_set": args.benchmark, "split": split, "benchmark": args.eval_source,
              "n_problems": max((r["n"] for r in table), default=0), "models": table, "settings": settings,
              "curriculum_difficulty": {"source": DIFFICULTY_SOURCE, "rows": curriculum} if curriculum else None,
              "stage_seconds": {name: s.get("seconds") for name, s in ledger["stages"].items()},
              "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "unit": "problem"}}  # fmt: skip
    report["over_seeds"] = over_seeds(table)
    report["headline"] = headline(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    plot_pass_intervals({r["model"]: (r["pass@1"], r["low"], r["high"]) for r in table if r["n"]},
                        out / "pass_at_1.png",
                        f"Greedy pass@1 on {args.benchmark} {split}, 95% Wilson interval")  # fmt: skip
    replies = [{**r, "model": label, "benchmark": f"{args.benchmark} {split}"} for label in labels for r in rows[label]]
    plot_length_histograms(replies, out / "lengths.png")
    return report


def _spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), min and max, rounded to 6 places (4 would move a
    mean of differences such as -0.035533 across a rounding edge when printed in points)."""
    return {"mean": round(statistics.fmean(values), 6),
            "sd": round(statistics.stdev(values), 6) if len(values) > 1 else None,
            "min": round(min(values), 6), "max": round(max(values), 6)}  # fmt: skip


def over_seeds(models: list[dict]) -> list[dict]:
    """Per trained method, its evaluated training seeds: pass@1 at each, its spread, the difference from the sft_all
    of the same seed at each (paired bootstrap, `vs_sft_all`) with its spread, and at how many seeds that
    difference's 95% interval lies wholly above or below 0. Methods in METHODS order, seeds in label order.

    Written here because the spread over seeds is a sample of training runs, not of problems: the per-problem
    intervals of one run do not hold it (docs/training.md, "Training seeds")."""
    found: dict[str, list[dict]] = {}
    for r in models:
        method, seed = method_seed(r["model"])
        if seed is not None and r["pass@1"] is not None:
            found.setdefault(method, []).append({"seed": seed, "row": r})
    summary = []
    for method in [m for m in METHODS if m in found]:
        runs = found[method]
        per_seed = [r["row"].get(f"vs_{REFERENCE}") for r in runs]  # None where that seed's sft_all is missing
        versus = [v for v in per_seed if v]
        summary.append({
            "method": method, "seeds": [r["seed"] for r in runs], "pass@1": [r["row"]["pass@1"] for r in runs],
            **_spread([r["row"]["pass@1"] for r in runs]),
            f"vs_{REFERENCE}": [v["difference"] if v else None for v in per_seed],
            f"vs_{REFERENCE}_spread": _spread([v["difference"] for v in versus]) if versus else None,
            "seeds_above": sum(v["low"] > 0 for v in versus), "seeds_below": sum(v["high"] < 0 for v in versus),
        })  # fmt: skip
    return summary


def headline(report: dict) -> dict:
    """The one JSON line: per model its figures, per method its mean over seeds, and the best method by that mean
    (None on a tie, e.g. --quick where every student scores 0)."""
    methods = over_seeds(report["models"])
    top = max((m["mean"] for m in methods), default=None)
    leaders = [m["method"] for m in methods if m["mean"] == top]
    return {
        "benchmark": "distill_quality", "problem_set": report["problem_set"], "split": report["split"],
        "n_problems": report["n_problems"],
        "best": leaders[0] if len(leaders) == 1 else None,
        "models": {r["model"]: {"pass@1": r["pass@1"], "ci95": [r["low"], r["high"]],
                                "gap_closed": (r["gap_closed"] or {}).get("gap_closed"),
                                "gap_ci95": [(r["gap_closed"] or {}).get("low"), (r["gap_closed"] or {}).get("high")],
                                f"vs_{REFERENCE}": _versus(r)}
                   for r in report["models"]},
        "methods": {m["method"]: {"seeds": m["seeds"], "mean": m["mean"], "sd": m["sd"],
                                  f"vs_{REFERENCE}_mean": (m[f"vs_{REFERENCE}_spread"] or {}).get("mean")}
                    for m in methods},
        "stage_seconds": report["stage_seconds"],
    }  # fmt: skip


def _versus(row: dict) -> list | None:
    """[difference, low, high] of pass@1 against the reference (paired bootstrap), or None."""
    v = row.get(f"vs_{REFERENCE}")
    return [v["difference"], v["low"], v["high"]] if v else None


def _cell(value, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _gap_cell(gap: dict | None) -> str:
    if not gap:
        return "n/a"
    return f"{gap['gap_closed']:+.2f} [{_cell(gap['low'], '{:+.2f}')}, {_cell(gap['high'], '{:+.2f}')}]"


def _versus_cell(row: dict) -> str:
    """The difference against the reference and its interval, in percentage points."""
    return difference_cell(row.get(f"vs_{REFERENCE}"))


def difference_cell(v: dict | None) -> str:
    """A paired difference (`paired_difference`'s dict, shares) and its interval, in percentage points; "n/a" for
    None."""
    if not v:
        return "n/a"
    return f"{100 * v['difference']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]"


def trainer_eval_notes(models: list[dict], prompts: str = "its dev prompts") -> list[str]:
    """One line per trained model whose trainer measured itself on `prompts` (`train_evals`: opd's per-token
    reverse KL to the teacher, first and last evaluation): arithmetic's dev prompts, or, for a problem set without
    a dev split (GSM8K), its first train prompts, which it also trains on."""
    lines = []
    for r in models:
        evals = [e for e in r.get("train_evals") or [] if e.get("reverse_kl") is not None]
        if len(evals) >= 2:
            first, last = evals[0], evals[-1]
            lines.append(f"{r['model']}: per-token reverse KL to the teacher on {prompts} (sampled estimate), "
                         f"{first['reverse_kl']:.3f} at step {first['step']} -> {last['reverse_kl']:.3f} at step "
                         f"{last['step']}.")  # fmt: skip
    return lines


def _points(values: list[float | None]) -> str:
    """Differences in percentage points, one per seed ("n/a" where there is none); "" when all are missing."""
    if all(v is None for v in values):
        return ""
    return ", ".join("n/a" if v is None else f"{100 * v:+.1f}" for v in values)


def _above_below(method: dict) -> str:
    """'above / below of n': the seeds whose paired interval against sft_all lies wholly above / below 0."""
    compared = sum(v is not None for v in method[f"vs_{REFERENCE}"])
    return f"{method['seeds_above']} / {method['seeds_below']} of {compared}" if compared else "n/a"


def seed_lines(summary: list[dict]) -> list[str]:
    """The markdown table over training seeds, when some method was trained at more than one."""
    if all(len(m["seeds"]) < 2 for m in summary):
        return []
    lines = ["## Over training seeds", "",
             f"| method | seeds | pass@1 per seed | mean (sd) [min, max] | vs {REFERENCE} of the same seed, points | "
             "mean (sd) | seeds with the paired interval above / below 0 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in summary:
        sd = _cell(None if m["sd"] is None else 100 * m["sd"], "{:.1f}")
        versus = m[f"vs_{REFERENCE}_spread"]
        vs_sd = None if versus is None or versus["sd"] is None else 100 * versus["sd"]
        vs_mean = "n/a" if versus is None else f"{100 * versus['mean']:+.1f} ({_cell(vs_sd, '{:.1f}')})"
        lines.append(f"| {m['method']} | {', '.join(map(str, m['seeds']))} | "
                     f"{', '.join(f'{100 * p:.1f}' for p in m['pass@1'])} | "
                     f"{100 * m['mean']:.1f} ({sd}) [{100 * m['min']:.1f}, {100 * m['max']:.1f}] | "
                     f"{_points(m[f'vs_{REFERENCE}']) or 'n/a'} | {vs_mean} | "
                     f"{_above_below(m)} |")  # fmt: skip
    lines += ["", "pass@1 in percent. The spread over seeds is that of training runs on the same rows and problems; "
              "a method whose difference from sft_all changes sign between seeds is not shown to differ from it.", ""]
    return lines


def settings_line(report: dict) -> str:
    """report.md's first paragraph: the split, models, data, trainer budget, seeds and any --set overrides."""
    s = report["settings"]
    return (
        f"Split **{report['split']}** of `{report['benchmark']}`, {report['n_problems']} problems, greedy (temperature "
        f"0, one reply each). Student `{s['student']}`, teacher `{s['teacher']}`; {s['train_problems']} train "
        f"problems x {s['samples']} samples x temperatures {s['temperatures']}, {s['max_new_tokens']} new tokens; "
        f"every trainer {s['steps']} optimizer steps of {s['batch_size']} at lr {s['lr']}"
        + "".join(f" ({m} at {s[f'{m}_lr']})" for m in ("dpo", "opd") if m in s["methods"])
        + f"; training seed{'s' if len(s['seeds']) > 1 else ''} {', '.join(map(str, s['seeds']))}"
        + (" (--quick)" if s["quick"] else "")
        + "".join(f"; --set {item}" for item in s.get("set") or []) + "."
    )  # fmt: skip


def render_markdown(report: dict) -> str:
    lines = [
        "# Distillation quality: which method gives the best student",
        "",
        settings_line(report),
        "",
        f"| model | pass@1 [95% CI] | gap closed [95% CI] | vs {REFERENCE}, points [95% CI] | mean tokens correct / "
        "incorrect | cap share | train steps | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in report["models"]:
        ci = f"{_cell(r['pass@1'], '{:.3f}')} [{_cell(r['low'], '{:.3f}')}, {_cell(r['high'], '{:.3f}')}]"
        lines.append(f"| {r['model']} | {ci} | {_gap_cell(r['gap_closed'])} | {_versus_cell(r)} | "
                     f"{_cell(r['mean_tokens_correct'])} / "
                     f"{_cell(r['mean_tokens_incorrect'])} | {_cell(r['cap_share'], '{:.3f}')} | "
                     f"{_cell(r['train_steps'])} | {_cell(r['train_seconds'])} |")  # fmt: skip
    cur = report["curriculum_difficulty"]
    lines += ["", "pass@1 interval: Wilson score (Wilson 1927). Gap closed = (model - base) / (teacher - base), "
              f"percentile bootstrap over problems ({report['bootstrap']['resamples']} resamples, seed "
              f"{report['bootstrap']['seed']}); n/a where teacher and base tie. vs {REFERENCE}: pass@1 minus "
              f"{REFERENCE}'s in percentage points, paired bootstrap over the same problems; an interval holding 0 "
              "cannot tell the two apart. A model trained with another seed S is labelled <method>_sS and compared "
              "with sft_all at the same seed.", ""]  # fmt: skip
    lines += seed_lines(report["over_seeds"])
    if cur:
        lines.append(f"Curriculum difficulty source: {cur['source']}; rows per level {cur['rows']}.")
    held_out = report.get("problem_set", "arithmetic") == "arithmetic"
    lines += trainer_eval_notes(report["models"], "its dev prompts" if held_out else "its first train prompts")
    best = report["headline"]["best"]
    lines.append(f"Best trained student (highest pass@1, mean over seeds): **{best}**." if best else
                 "Best trained student: none, the top pass@1 is shared.")  # fmt: skip
    return "\n".join(lines) + "\n"


def print_table(report: dict) -> None:
    print(f"distill quality on {report['problem_set']} {report['split']} ({report['n_problems']} problems, greedy)")
    print(f"{'model':<12}{'pass@1':>8}{'95% CI':>18}{'gap closed':>24}{'vs ' + REFERENCE + ' (pts)':>24}{'cap':>7}"
          f"{'steps':>7}{'train s':>9}")
    for r in report["models"]:
        ci = f"[{_cell(r['low'], '{:.3f}')}, {_cell(r['high'], '{:.3f}')}]"
        print(f"{r['model']:<12}{_cell(r['pass@1'], '{:.3f}'):>8}{ci:>18}{_gap_cell(r['gap_closed']):>24}"
              f"{_versus_cell(r):>24}"
              f"{_cell(r['cap_share'], '{:.2f}'):>7}{_cell(r['train_steps']):>7}{_cell(r['train_seconds']):>9}")
    for m in report["over_seeds"]:
        if len(m["seeds"]) > 1:
            versus = m[f"vs_{REFERENCE}_spread"]
            print(f"{m['method']:<12} over seeds {','.join(map(str, m['seeds']))}: pass@1 mean {m['mean']:.3f} "
                  f"(sd {_cell(m['sd'], '{:.3f}')}, {m['min']:.3f}-{m['max']:.3f})"
                  + ("" if versus is None else f"; vs {REFERENCE} {_points(m[f'vs_{REFERENCE}'])} points"))
