"""benchmarks/distill_quality.py: the interval statistics (distill_ray/eval/metrics.py), the ledger and its
fingerprint (pure, no Ray), and one `--quick` run end to end that is resumed as a no-op by the same command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO  # the repository root

from distill_ray.eval.metrics import bootstrap_gap_closed, bootstrap_paired_difference, gap_closed, wilson_interval

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import their neighbours by name
import distill_quality as dq  # noqa: E402
from quality_report import (  # noqa: E402
    headline, length_terciles, method_seed, over_seeds, paired_difference, reference_of, trainer_eval_notes,
)

BENCH = REPO / "benchmarks" / "distill_quality.py"


# ---- Wilson interval ------------------------------------------------------------------------------------------


def wilson_by_hand(k: int, n: int, z: float) -> tuple[float, float]:
    """The score interval solved as the quadratic it is: the p with |phat - p| = z sqrt(p (1 - p) / n)."""
    phat = k / n
    a = 1 + z * z / n
    b = -(2 * phat + z * z / n)
    c = phat * phat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(("k", "n", "expected"), [
    (81, 263, (0.2553, 0.3662)),  # the textbook example (Newcombe 1998, Wilson without continuity correction)
    (0, 10, (0.0, 0.2775)),
    (5, 10, (0.2366, 0.7634)),
    (10, 10, (0.7225, 1.0)),
])  # fmt: skip
def test_wilson_matches_known_values_and_the_quadratic(k, n, expected):
    low, high = wilson_interval(k, n)
    assert (round(low, 4), round(high, 4)) == expected
    by_hand = wilson_by_hand(k, n, 1.96)
    assert low == pytest.approx(max(0.0, by_hand[0]), abs=1e-12) and high == pytest.approx(min(1.0, by_hand[1]))
    assert low <= k / n <= high


def test_wilson_refuses_impossible_counts():
    for k, n in ((0, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            wilson_interval(k, n)


# ---- gap closed ---------------------------------------------------------------------------------------------


def test_gap_closed_is_none_when_teacher_ties_base():
    assert gap_closed(0.5, 0.3, 0.3) is None
    assert bootstrap_gap_closed([1, 0, 1], [1, 0, 0], [0, 1, 0]) is None  # both 1/3: undefined, not an error
    assert gap_closed(0.5, 0.25, 0.75) == 0.5


def test_bootstrap_gap_closed_brackets_its_point_and_is_reproducible():
    rng = __import__("numpy").random.default_rng(1)
    base, teacher = rng.random(200) < 0.2, rng.random(200) < 0.8
    model = base | (teacher & (rng.random(200) < 0.5))
    first = bootstrap_gap_closed(model, base, teacher, seed=3)
    assert first == bootstrap_gap_closed(model, base, teacher, seed=3)
    assert first["low"] <= first["gap_closed"] <= first["high"]
    assert first["gap_closed"] == pytest.approx((model.mean() - base.mean()) / (teacher.mean() - base.mean()), 1e-3)
    assert first["resamples_used"] == 1000


def test_bootstrap_gap_closed_at_the_ends():
    same_as_base = bootstrap_gap_closed([0, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 0])
    assert (same_as_base["gap_closed"], same_as_base["low"], same_as_base["high"]) == (0.0, 0.0, 0.0)
    as_teacher = bootstrap_gap_closed([1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0])
    assert as_teacher["gap_closed"] == as_teacher["low"] == as_teacher["high"] == 1.0
    with pytest.raises(ValueError):
        bootstrap_gap_closed([1, 0], [1], [0, 1])
    with pytest.raises(ValueError):
        bootstrap_gap_closed([], [], [])


def test_paired_difference_counts_the_problems_only_one_model_solved():
    same = bootstrap_paired_difference([1, 0, 1, 0], [1, 0, 1, 0])
    assert (same["difference"], same["low"], same["high"], same["a_only"], same["b_only"]) == (0.0, 0.0, 0.0, 0, 0)
    better = bootstrap_paired_difference([1, 1, 1, 1], [0, 0, 0, 0])
    assert better["difference"] == better["low"] == better["high"] == 1.0 and better["a_only"] == 4
    with pytest.raises(ValueError):
        bootstrap_paired_difference([1, 0], [1])
    with pytest.raises(ValueError):
        bootstrap_paired_difference([], [])
    with pytest.raises(ValueError):
        bootstrap_paired_difference([1], [0], resamples=0)


def test_paired_difference_separates_models_whose_own_intervals_overlap():
    # B solves what A solves plus 10 more of 300: the paired interval sits near +10/300 and excludes 0, although
    # the two models' own Wilson intervals overlap almost entirely.
    rng = __import__("numpy").random.default_rng(0)
    a = rng.random(300) < 0.3
    b = a.copy()
    b[[i for i in range(300) if not a[i]][:10]] = True
    diff = bootstrap_paired_difference(b, a, seed=1)
    assert diff["difference"] == pytest.approx(10 / 300, abs=1e-4) and (diff["a_only"], diff["b_only"]) == (10, 0)
    assert 0 < diff["low"] <= diff["difference"] <= diff["high"]
    (a_low, a_high), (b_low, b_high) = wilson_interval(int(a.sum()), 300), wilson_interval(int(b.sum()), 300)
    assert b_low < a_high  # unpaired, the intervals overlap
    assert diff == bootstrap_paired_difference(b, a, seed=1)  # a fixed seed reproduces


def test_report_compares_each_method_with_sft_all_on_the_problems_both_answered():
    rows = {"sft_all": [{"id": "p1", "correct": True}, {"id": "p2", "correct": False}, {"id": "p3", "correct": None}],
            "kd": [{"id": "p1", "correct": True}, {"id": "p2", "correct": True}, {"id": "p9", "correct": True}]}
    diff = paired_difference(rows, "kd", "sft_all")  # p1, p2 only; kd alone solved p2
    assert (diff["difference"], diff["a_only"], diff["b_only"]) == (0.5, 1, 0)
    assert paired_difference(rows, "sft_all", "sft_all") is None
    assert paired_difference({"kd": rows["kd"]}, "kd", "sft_all") is None  # sft_all not evaluated


def test_report_names_the_set_overrides_it_ran_with():
    """A run with --set (an ablation) says so in report.md's settings line, not only in report.json."""
    from quality_report import settings_line

    settings = dict(student="s", teacher="t", methods=["advdistill"], train_problems=3, samples=1, temperatures=[0.0],
                    max_new_tokens=8, steps=2, lr=1e-4, batch_size=2, seeds=[8], quick=False, dpo_lr=1e-6,
                    opd_lr=1e-6, set=["stages.advdistill.training.advdistill.normalize=token"])  # fmt: skip
    report = {"split": "test", "benchmark": "b", "n_problems": 0, "settings": settings}
    assert settings_line(report).endswith("seed 8; --set stages.advdistill.training.advdistill.normalize=token.")
    assert settings_line({**report, "settings": {**settings, "set": []}}).endswith("seed 8.")


# ---- ledger, fingerprint, plan ------------------------------------------------------------------------------


def test_a_stage_fingerprint_changes_only_with_what_its_output_depends_on():
    a = dq.parse_args(["--quick", "--out", "/tmp/a"])
    same = dq.parse_args(["--quick", "--out", "/tmp/b", "--verbose"])
    assert all(dq.fingerprint(a, s) == dq.fingerprint(same, s) for s in ("generate", "sft_all", "eval"))
    steps = dq.parse_args(["--quick", "--steps", "3"])
    assert dq.fingerprint(a, "generate") == dq.fingerprint(steps, "generate")  # the teacher's replies are reused
    assert dq.fingerprint(a, "sft_all") != dq.fingerprint(steps, "sft_all")
    more = dq.parse_args(["--quick", "--methods", "sft_all,curriculum,kd,sft_best", "--dev"])
    assert dq.fingerprint(a, "kd") == dq.fingerprint(more, "kd")  # adding a method or a split: only eval again
    assert dq.fingerprint(a, "eval") != dq.fingerprint(more, "eval")
    assert dq.fingerprint(a, "difficulty") != dq.fingerprint(dq.parse_args(["--quick", "--samples", "3"]),
                                                             "difficulty")  # fmt: skip
    def changed(argv):
        other = dq.parse_args(["--quick", *argv])
        return [s for s in ("generate", "curate", "logits", "sft_all", "kd", "dpo", "opd", "eval")
                if dq.fingerprint(a, s) != dq.fingerprint(other, s)]  # fmt: skip

    # a --set item redoes the stage it reaches and what reads that stage's outputs; outside `stages.`, everything
    assert changed(["--set", "stages.dpo.training.dpo.beta=0.2"]) == ["dpo", "eval"]
    assert changed(["--set", "stages.sft_all.training.max_length=256"]) == ["sft_all", "dpo", "opd", "eval"]
    assert changed(["--set", "stages.generate.inference.top_p=0.9"]) == [
        "generate", "curate", "logits", "sft_all", "kd", "dpo", "opd", "eval"]
    assert changed(["--set", "inference.seed=3"]) == changed(["--set", "stages.generate.inference.top_p=0.9"])
    for method in ("dpo", "opd"):  # a method's own rate: only that method and eval again, eval only if chosen
        chosen = ["--quick", "--batch-size", "4", "--methods", f"sft_all,{method}"]
        assert [s for s in ("generate", "sft_all", "kd", "dpo", "opd", "eval")
                if dq.fingerprint(dq.parse_args(chosen), s)
                != dq.fingerprint(dq.parse_args([*chosen, f"--{method}-lr", "3e-6"]), s)] == [method, "eval"]
        assert changed([f"--{method}-lr", "3e-6"]) == [method]  # not among the --quick methods: eval stands


def test_ledger_records_finished_stages_under_the_arguments_they_ran_with(tmp_path):
    args, other = dq.parse_args(["--quick"]), dq.parse_args(["--quick", "--steps", "3"])
    ledger = dq.new_ledger()
    ledger["running"] = {n: dq.fingerprint(args, n) for n in ("generate", "logits", "sft_all")}
    summary = {"status": "failed", "stages": [
        {"name": "generate", "job_type": "generate", "seconds": 3.5, "rows_out": 6, "metrics": {}},
        {"name": "logits", "job_type": "logits", "seconds": 1.0, "rows_out": 6, "metrics": {}},
        {"name": "stray", "job_type": "sft", "seconds": 1.0, "rows_out": 6, "metrics": {}},
    ]}  # fmt: skip  (sft_all failed: the runner lists only finished stages; `stray` was not in this run)
    assert dq.record_finished(ledger, summary) == ["generate", "logits"]
    assert dq.record_finished(ledger, summary) == []  # read twice (resume after a kill): nothing new
    assert dq.pending(["generate", "logits", "sft_all"], ledger, args) == ["sft_all"]
    assert dq.pending(["generate", "logits", "sft_all"], ledger, other) == ["sft_all"]  # steps: training only
    assert ledger["stages"]["generate"]["seconds"] == 3.5
    (tmp_path / "logits").mkdir()
    (tmp_path / "logits" / "part-0.parquet").write_text("old")
    dq.forget_stale(tmp_path, ledger, ["logits"])
    assert not (tmp_path / "logits").exists() and "logits" not in ledger["stages"]


def test_eval_size_defaults_to_the_whole_split_and_never_exceeds_it(capsys):
    assert dq.parse_args([]).eval_problems == 376
    assert dq.parse_args(["--dev"]).eval_problems == 197  # the dev split is smaller: its default follows it
    for argv in (["--dev", "--eval-problems", "198"], ["--train-problems", "1372"]):
        with pytest.raises(SystemExit) as stopped:
            dq.parse_args(argv)
        assert stopped.value.code == 2
    assert "holds only 1371 distinct problems" in capsys.readouterr().err


def test_opd_needs_whole_prompts_on_every_worker(capsys):
    with pytest.raises(SystemExit):
        dq.parse_args(["--methods", "opd", "--batch-size", "6"])  # 2 workers x G=2 rollouts: multiples of 4
    assert "multiple of 4" in capsys.readouterr().err
    assert dq.parse_args(["--methods", "kd", "--batch-size", "6"]).batch_size == 6


def test_curriculum_needs_a_step_per_phase(capsys):
    # one step each for medium, then medium + hard: --steps 1 would have trained 2, more than the other methods
    with pytest.raises(SystemExit) as stopped:
        dq.parse_args(["--quick", "--methods", "curriculum", "--steps", "1"])
    assert stopped.value.code == 2 and "at least 2" in capsys.readouterr().err
    assert dq.parse_args(["--quick", "--methods", "sft_all", "--steps", "1"]).steps == 1  # one phase: fine


def test_stale_stages_lose_their_folders_but_eval_keeps_its_answers(tmp_path):
    """eval's stored answers name each model's weights (model_identity, tested in tests/jobs/data/test_generate.py):
    the benchmark keeps them, so a rerun asks only new or retrained models; other stages start over."""
    ledger = {"stages": {"kd": {"fingerprint": "old"}, "eval": {"fingerprint": "old"}}}
    for name in ("kd", "eval"):
        (tmp_path / name / "results").mkdir(parents=True)
    dq.forget_stale(tmp_path, ledger, ["kd", "eval"])
    assert not (tmp_path / "kd").exists() and (tmp_path / "eval" / "results").is_dir()
    assert ledger["stages"] == {}


def test_plan_has_only_what_the_methods_need():
    assert dq.planned_stages(["sft_all"]) == (["generate"], ["sft_all", "eval"])
    assert dq.planned_stages(["kd", "advdistill"]) == (["generate", "curate", "logits"], ["advdistill", "kd", "eval"])
    args = dq.parse_args(["--methods", "dpo"])
    assert args.methods == ["sft_all", "dpo"]  # dpo starts from sft_all's model
    assert dq.parse_args(["--methods", "opd"]).methods == ["sft_all", "opd"]  # so does opd
    assert dq.overrides_for(["stages.eval.x=1", "inference.seed=3"], ["generate"]) == ["inference.seed=3"]


def test_every_full_stage_config_validates():
    from pathlib import Path

    from distill_ray.config import build_config

    args = dq.parse_args([])
    data, train = dq.planned_stages(args.methods)
    cfg = build_config(dq.pipeline_raw(args, Path("/tmp/dq-plan"), data + train, Path("/tmp/dq-state"), 8000))
    by_name = {s.name: s.job for s in cfg.stages}
    assert all(by_name[m].training.max_steps == args.steps for m in args.methods)
    assert by_name["dpo"].models.student == "/tmp/dq-plan/sft_all/model"
    assert by_name["dpo"].training.learning_rate == args.dpo_lr != args.lr
    assert by_name["opd"].training.learning_rate == args.opd_lr != args.lr
    assert {by_name[m].training.learning_rate for m in args.methods if m not in ("dpo", "opd")} == {args.lr}
    opd = by_name["opd"]  # on-policy from the SFT student; as many sequences (rollouts) a step as the others
    assert opd.models.student == "/tmp/dq-plan/sft_all/model" and "split=train" in opd.dataset.instruction_path
    rollouts = opd.training.per_device_train_batch_size * opd.training.num_workers * opd.training.opd.group_size
    assert rollouts == args.batch_size and "split=dev" in opd.training.opd.eval_path  # never the test split
    assert list(by_name["eval"].evaluation.models)[:2] == ["base", "teacher"]


def test_gsm8k_trains_on_its_train_file_and_holds_out_its_test_file(capsys):
    """--benchmark gsm8k: the bundled train and test files, GSM8K's references (after '####') and its eval preset's
    user turn in every stage, its own defaults and output folder; no dev split, so --dev is refused."""
    from pathlib import Path

    from distill_ray.config import build_config
    from distill_ray.prompts import BENCHMARK_TEMPLATES

    args = dq.parse_args(["--benchmark", "gsm8k"])
    assert (args.eval_problems, args.max_new_tokens, args.out) == (300, 512, "runs/distill_quality_gsm8k")
    assert dq.set_size("gsm8k", "train") == 7473 and dq.set_size("gsm8k", "test") == 1319
    data, train = dq.planned_stages(args.methods)
    cfg = build_config(dq.pipeline_raw(args, Path("/tmp/dq-plan"), data + train, Path("/tmp/dq-state"), 8000))
    by_name = {s.name: s.job for s in cfg.stages}
    for name in ("generate", "opd"):
        dataset = by_name[name].dataset
        assert (dataset.instruction_path, dataset.answer_format) == ("bundled:gsm8k/train", "gsm8k")
    assert by_name["opd"].training.opd.eval_path is None  # its first train prompts, never the test file
    [bench] = by_name["eval"].evaluation.benchmarks
    assert (bench.name, bench.preset, bench.path, bench.limit) == ("gsm8k_test", "gsm8k", "bundled:gsm8k/test", 300)
    assert {job.inference.user_template for job in by_name.values()} == {BENCHMARK_TEMPLATES["gsm8k"]}
    assert by_name["sft_all"].training.max_length == 512 + 256  # GSM8K's longer prompts
    arithmetic = dq.parse_args(["--max-new-tokens", "512", "--eval-problems", "300"])  # GSM8K's own defaults
    assert all(dq.fingerprint(args, s) != dq.fingerprint(arithmetic, s) for s in data + train)  # the set alone
    assert dq.parse_args([]).out == "runs/distill_quality" and arithmetic.eval_source.endswith("split=test")
    for argv in (["--dev"], ["--eval-problems", "1320"]):
        with pytest.raises(SystemExit) as stopped:
            dq.parse_args(["--benchmark", "gsm8k", *argv])
        assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "gsm8k has no dev split" in err and "gsm8k test split holds only 1319" in err


# ---- training seeds -----------------------------------------------------------------------------------------


def test_seed_stage_names_read_back():
    assert [method_seed(n) for n in ("kd", "kd_s8", "sft_all_s12", "eval", "base", "foo_s8")] == [
        ("kd", 7), ("kd", 8), ("sft_all", 12), ("eval", None), ("base", None), ("foo_s8", None)]
    assert [reference_of(n) for n in ("kd", "dpo_s8", "sft_all_s9", "teacher")] == [
        "sft_all", "sft_all_s8", "sft_all_s9", "sft_all"]


def test_seeds_are_distinct_integers(capsys):
    assert dq.parse_args([]).seeds == [7] and dq.parse_args(["--seeds", "9, 8"]).seeds == [9, 8]
    for bad in ("7,7", "x", ",", "-1"):
        with pytest.raises(SystemExit) as stopped:
            dq.parse_args(["--seeds", bad])
        assert stopped.value.code == 2
    assert "--seeds" in capsys.readouterr().err
    for item in ("training.seed=3", "stages.kd.training.seed=5"):  # a stage's seed comes from its name only
        with pytest.raises(SystemExit):
            dq.parse_args(["--set", item])
        assert "chosen with --seeds" in capsys.readouterr().err


def test_each_seed_is_its_own_stage_and_dpo_starts_from_the_sft_of_its_seed():
    from pathlib import Path

    from distill_ray.config import build_config

    one, two = dq.parse_args(["--methods", "kd,dpo"]), dq.parse_args(["--methods", "kd,dpo", "--seeds", "7,8"])
    data, train = dq.planned_stages(two.methods, two.seeds)
    assert train == ["sft_all", "sft_all_s8", "kd", "kd_s8", "dpo", "dpo_s8", "eval"]
    cfg = build_config(dq.pipeline_raw(two, Path("/tmp/dq-plan"), data + train, Path("/tmp/dq-state"), 8000))
    by_name = {s.name: s.job for s in cfg.stages}
    assert [by_name[n].training.seed for n in train[:-1]] == [7, 8, 7, 8, 7, 8]
    assert [by_name[n].training.seed for n in ("generate", "eval")] == [7, 7]  # the teacher's replies: not seeded
    assert by_name["dpo"].models.student == "/tmp/dq-plan/sft_all/model"
    assert by_name["dpo_s8"].models.student == "/tmp/dq-plan/sft_all_s8/model"
    assert by_name["dpo_s8"].training.learning_rate == two.dpo_lr  # the method's own settings, another seed
    assert by_name["kd_s8"].training.kd.logits_path == by_name["kd"].training.kd.logits_path
    assert list(by_name["eval"].evaluation.models) == ["base", "teacher", *train[:-1]]
    # adding a seed keeps every stage of the first (their seed is in their name), and eval reasks only new models
    assert [n for n in ("generate", "sft_all", "kd", "dpo", "eval") if dq.fingerprint(one, n) != dq.fingerprint(two, n)
            ] == ["eval"]  # fmt: skip
    assert dq.upstream("dpo_s8") == {"generate", "pairs", "sft_all_s8", "dpo_s8"}
    # a --set item for a method reaches it at every seed; one for a seed's stage only that stage
    assert dq.overrides_for(["stages.dpo.training.dpo.beta=0.2", "stages.kd_s8.training.kd.alpha=0.3"],
                            ["dpo", "dpo_s8", "kd", "kd_s8"]) == [
        "stages.dpo_s8.training.dpo.beta=0.2", "stages.dpo.training.dpo.beta=0.2", "stages.kd_s8.training.kd.alpha=0.3"]
    beta = dq.parse_args(["--methods", "kd,dpo", "--seeds", "7,8", "--set", "stages.dpo.training.dpo.beta=0.2"])
    assert [n for n in train if dq.fingerprint(two, n) != dq.fingerprint(beta, n)] == ["dpo", "dpo_s8", "eval"]
    one_seed = dq.parse_args(["--methods", "kd,dpo", "--seeds", "7,8", "--set", "stages.kd_s8.training.kd.alpha=0.3"])
    assert [n for n in train if dq.fingerprint(two, n) != dq.fingerprint(one_seed, n)] == ["kd_s8", "eval"]
    # one seed's own item wins over its method's, in either order
    for items in (["stages.kd_s8.x=0.1", "stages.kd.x=0.5"], ["stages.kd.x=0.5", "stages.kd_s8.x=0.1"]):
        applied = dict(item.split("=") for item in dq.overrides_for(items, ["kd", "kd_s8"]))  # the last one wins
        assert applied == {"stages.kd.x": "0.5", "stages.kd_s8.x": "0.1"}


def test_over_seeds_pairs_each_seed_with_its_own_sft_all():
    def row(model, p, versus=None):
        return {"model": model, "pass@1": p, "low": 0.0, "high": 1.0, "gap_closed": None, "vs_sft_all": versus}

    def diff(d, low, high):
        return {"difference": d, "low": low, "high": high}

    models = [row("base", 0.01), row("teacher", 0.2), row("sft_all", 0.30), row("sft_all_s8", 0.24),
              row("kd", 0.33, diff(0.03, 0.01, 0.05)), row("kd_s8", 0.20, diff(-0.04, -0.07, -0.01)),
              row("dpo_s8", 0.28, diff(0.04, -0.01, 0.09)), row("opd", 0.1), row("opd_s8", 0.2, diff(0.0, -0.1, 0.1))]
    summary = {m["method"]: m for m in over_seeds(models)}
    assert list(summary) == ["sft_all", "kd", "dpo", "opd"]
    assert summary["opd"]["vs_sft_all"] == [None, 0.0]  # aligned with the seeds: seed 7 has no difference here
    from quality_report import seed_lines

    table = "\n".join(seed_lines(list(summary.values())))
    assert "| kd | 7, 8 | 33.0, 20.0 | 26.5 (9.2) [20.0, 33.0] | +3.0, -4.0 | -0.5 (4.9) | 1 / 1 of 2 |" in table
    assert "| opd | 7, 8 | 10.0, 20.0 |" in table and "| n/a, +0.0 | +0.0 (n/a) | 0 / 0 of 1 |" in table
    assert "| sft_all | 7, 8 | 30.0, 24.0 | 27.0 (4.2) [24.0, 30.0] | n/a | n/a | n/a |" in table  # the reference
    kd = summary["kd"]
    assert (kd["seeds"], kd["pass@1"], kd["mean"], kd["min"], kd["max"]) == ([7, 8], [0.33, 0.2], 0.265, 0.2, 0.33)
    assert kd["sd"] == pytest.approx(0.0919, abs=1e-4) and kd["vs_sft_all"] == [0.03, -0.04]
    assert (kd["seeds_above"], kd["seeds_below"]) == (1, 1)  # the sign flips with the seed: not shown to differ
    assert summary["dpo"]["sd"] is None and summary["sft_all"]["vs_sft_all_spread"] is None
    line = headline({"problem_set": "arithmetic", "split": "test", "n_problems": 4, "stage_seconds": {},
                     "models": models})
    assert line["best"] == "dpo"  # by the mean over seeds: sft_all 0.27, kd 0.265, dpo 0.28
    assert line["methods"]["kd"] == {"seeds": [7, 8], "mean": 0.265, "sd": kd["sd"], "vs_sft_all_mean": -0.005}


def test_length_terciles_split_by_rank():
    assert length_terciles([30, 10, 20]) == ["hard", "easy", "medium"]
    labels = length_terciles([5] * 6)
    assert labels.count("easy") == labels.count("medium") == labels.count("hard") == 2
    # few rows: medium, the curriculum's first stage, is never empty
    assert length_terciles([9]) == ["medium"] and length_terciles([9, 3]) == ["medium", "medium"]
    assert length_terciles([4, 1, 3, 2]) == ["hard", "easy", "medium", "medium"]


def test_headline_names_a_best_method_only_without_a_tie():
    def row(model, p):
        return {"model": model, "pass@1": p, "low": 0.0, "high": 1.0, "gap_closed": None}

    report = {"problem_set": "arithmetic", "split": "test", "n_problems": 4, "stage_seconds": {},
              "models": [row("base", 0.1), row("teacher", 0.9), row("kd", 0.3), row("sft_all", 0.2)]}
    assert headline(report)["best"] == "kd"  # the teacher is not a candidate
    report["models"][3] = row("sft_all", 0.3)
    assert headline(report)["best"] is None


def test_trainer_eval_notes_give_the_first_and_last_reverse_kl():
    models = [{"model": "opd", "train_evals": [{"step": 0, "reverse_kl": 0.912}, {"step": 18, "reverse_kl": 0.7},
                                               {"step": 36, "reverse_kl": 0.455}]},
              {"model": "sft_all", "train_evals": None}, {"model": "grpo", "train_evals": [{"step": 0, "reward": 1}]}]
    assert trainer_eval_notes(models) == ["opd: per-token reverse KL to the teacher on its dev prompts (sampled "
                                          "estimate), 0.912 at step 0 -> 0.455 at step 36."]  # fmt: skip
    assert "on its first train prompts" in trainer_eval_notes(models, "its first train prompts")[0]  # GSM8K: no dev


# ---- end to end ---------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(1100)
def test_quick_run_reports_every_model_adds_a_seed_and_resumes_as_a_no_op(tmp_path):
    out = tmp_path / "dq"
    command = [sys.executable, str(BENCH), "--quick", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's packages, also in a worktree of an editable install
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    labels = [r["model"] for r in report["models"]]
    assert labels == ["base", "teacher", *dq.QUICK_METHODS]
    for row in report["models"]:
        assert row["n"] > 0, row
        assert row["low"] <= row["pass@1"] <= row["high"], row
        if row["model"] not in ("base", "teacher"):
            assert row["train_steps"] == 2 and row["train_seconds"] > 0, row
        versus = row["vs_sft_all"]  # every trained method against sft_all on the same problems
        if row["model"] in ("base", "teacher", "sft_all"):
            assert versus is None, row
        else:
            assert versus["low"] <= versus["difference"] <= versus["high"], row
    headline = json.loads(first.stdout.strip().splitlines()[-1])
    assert set(headline["models"]) == set(labels) and headline["stage_seconds"]["eval"] > 0
    assert (out / "report.md").stat().st_size > 0 and (out / "pass_at_1.png").is_file()
    ledger = json.loads((out / "ledger.json").read_text())
    assert {"generate", "logits", "difficulty", "eval", *dq.QUICK_METHODS} <= set(ledger["stages"])

    assert ledger["stages"]["eval"]["metrics"]["teacher_calls"] > 0  # eval says how many answers it asked

    # a second training seed for two methods: only their new stages train, eval asks only the two new models
    seeds = [*command, "--methods", "sft_all,kd", "--seeds", "7,8"]
    second = subprocess.run(seeds, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    after = json.loads((out / "ledger.json").read_text())
    assert {n: after["stages"][n] for n in ("generate", "sft_all", "kd")} == {
        n: ledger["stages"][n] for n in ("generate", "sft_all", "kd")}  # fmt: skip
    assert after["stages"]["eval"]["metrics"]["teacher_calls"] == 2 * report["n_problems"]
    seeded_report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in seeded_report["models"]] == ["base", "teacher", "sft_all", "sft_all_s8", "kd", "kd_s8"]
    by_model = {r["model"]: r for r in seeded_report["models"]}
    first_rows = {r["model"]: r for r in report["models"]}
    assert all(by_model[m]["pass@1"] == first_rows[m]["pass@1"] for m in ("base", "teacher", "sft_all", "kd"))
    summary = {m["method"]: m for m in seeded_report["over_seeds"]}
    assert summary["kd"]["seeds"] == [7, 8] and summary["sft_all"]["seeds"] == [7, 8]
    assert by_model["kd_s8"]["vs_sft_all"]["low"] <= by_model["kd_s8"]["vs_sft_all"]["high"]
    assert by_model["sft_all_s8"]["vs_sft_all"] is None  # the reference of its own seed
    assert "## Over training seeds" in (out / "report.md").read_text()

    summary_written = (out / "summary.json").stat().st_mtime_ns
    again = subprocess.run(seeds, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "summary.json").stat().st_mtime_ns == summary_written  # the runner (which rewrites it) never ran
    assert json.loads(again.stdout.strip().splitlines()[-1]) == json.loads(second.stdout.strip().splitlines()[-1])


