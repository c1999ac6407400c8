"""Benchmark (issue 17): which distillation method gives the best student on held-out problems, with 95% intervals.

From one base student and one teacher it runs the real pipeline (`jobs.runner.run_config`, the job types a user
runs) in two runs of the runner:
  data:  generate (train problems x G samples x temperatures, graded; keep correct) -> curate (answer groups,
         AdvDistill) -> pairs (correct vs incorrect) -> logits (teacher top-k, white-box KD);
  (between them, in this process: the curriculum's difficulty labels, see `quality_report.difficulty_rows`)
  train: one trainer per method, each from the same base student with the same optimizer-step budget, batch and
         learning rate (dpo and opd at their own, --dpo-lr, --opd-lr): sft_all (every kept response), sft_best
         (the highest-advantage reply of each group), advdistill (the group loss), curriculum (sft, medium rows
         first, then medium + hard), kd (top-k KD mixed with cross-entropy), dpo (on pairs, starting from
         sft_all's model), opd (on-policy distillation from sft_all's model: its own rollouts on the train
         problems, every token scored by the served teacher, reverse KL) -> eval: every trained model, `base` and
         `teacher`, greedy, on the test split (or dev with --dev).
Only the stages the chosen methods need are run.

Problem sets (--benchmark, each reported on its own): `arithmetic` (default; procedural integer problems with disjoint
train, dev and test splits) and `gsm8k` (the bundled GSM8K files: the first --train-problems of its train file, the
first --eval-problems of its test file, prompted and graded as the eval job's gsm8k preset). GSM8K ships no dev split,
so --dev is refused with it: settings are chosen on arithmetic's dev split. GSM8K needs a teacher that solves it; the
135M teacher here gets 1.7% (docs/results/gsm8k_teacher_base_test300.md), so point --teacher at a stronger one.

Training seeds (--seeds 7,8,9): every chosen method is trained once per seed, each from the same base and on the same
rows (the seed moves the shuffle, dropout and initialised heads, not the data); seed 7 keeps the plain stage name,
another seed S names its stage and model `<method>_sS` (dpo_s8 and opd_s8 start from sft_all_s8). Each seed's model is
compared with the sft_all of its own seed, and the report adds, per method, the mean, standard deviation and range
of pass@1 and of that difference over seeds, and at how many seeds the difference's paired interval clears 0. The
per-problem intervals of one run leave out how much a second training run moves a student; the spread over seeds
shows it (docs/training.md, "Training seeds").

Resumable: `<out>/ledger.json` lists the finished stages (read from `<out>/summary.json`, which the runner rewrites
after every stage, whether the run ends or fails), each with a fingerprint of the arguments its output depends on;
the same command skips them and continues. Changed arguments redo only the stages they affect (their old folders
deleted first, but eval's: it keeps each model's answers and asks again only the models whose weights or eval
settings changed): adding a method reuses the teacher's replies and the other models' answers. --fresh deletes
everything.

    python benchmarks/distill_quality.py                   # full run (hours on 2 CPU cores)
    python benchmarks/distill_quality.py --dev             # choose settings on the dev split
    python benchmarks/distill_quality.py --quick           # tiny models, minutes: a smoke test
    python benchmarks/distill_quality.py --seeds 7,8,9     # each method at three training seeds
    python benchmarks/distill_quality.py --benchmark gsm8k --teacher T --student S  # GSM8K; S with T's tokenizer

Writes `<out>/report.md`, `<out>/report.json` and PNG plots; prints a table, then as the last line one JSON
object (per model pass@1 with its interval, gap closed and difference from sft_all, each with its interval;
seconds per stage).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from bench_common import fill_defaults, free_loopback_port, ray_state_dir  # this folder is on sys.path
from quality_report import BENCHMARK, METHODS, SEED, method_seed, seeded

from distill_ray.data.sources import resolve_source, split_size
from distill_ray.prompts import BENCHMARK_TEMPLATES

log = logging.getLogger("distill_quality")

# A random tiny teacher solves nothing (no groups for advdistill, no pairs for dpo); sft_best is left out for time.
QUICK_METHODS = ("sft_all", "curriculum", "kd")
DEFAULTS = dict(
    # the teacher less 2 middle layers (first 26 + last 2): same tokenizer (KD); 3/64 on dev before training
    student="builtin:smollm2-135m-instruct?layers=28&keep_last=2",
    teacher="builtin:smollm2-135m-instruct",
    methods=",".join(METHODS),
    train_problems=300,  # of the 1371 train questions; x samples x temperatures teacher replies
    eval_problems=None,  # the whole held-out split: 376 test problems (max_operand=30), 197 with --dev
    samples=1,  # replies per problem and temperature; a group (AdvDistill, DPO pairs) is one per temperature
    temperatures="0.0,0.8",  # greedy plus one sample: 127 of 600 teacher replies correct in the measured run
    max_new_tokens=192,  # the teacher needs ~75 tokens for arithmetic; 64 cut its replies
    steps=36,  # optimizer steps, the same for every trainer: about 2 epochs of the ~130 kept replies
    lr=2e-4,  # on dev, 36 steps of 8 at 2e-4 took the student from 3/64 to 21/64 (in-process check)
    # DPO's own rate: at 2e-4 the DPO student fell 15 points below the SFT model it started from (test, 160
    # problems); DPO is usually run at 5e-7 to 5e-6 (its papers, TRL's examples)
    dpo_lr=5e-6,
    opd_lr=5e-5,  # recipes/on_policy.yaml's rate (a policy-gradient step on the sampled reverse KL); not tuned here
    batch_size=8,  # sequences (pairs for dpo, groups for advdistill) per optimizer step, over all workers
)
QUICK = dict(student="tiny:smollm2", teacher="tiny:smollm2", methods=",".join(QUICK_METHODS), train_problems=6,
             eval_problems=4, samples=2, temperatures="1.0", max_new_tokens=12, steps=2, lr=1e-4,
             dpo_lr=1e-4, opd_lr=1e-4, batch_size=2)  # fmt: skip
WORKERS = 2  # Ray Train workers (gloo), each with half a core, as in recipes/quickstart.yaml
# Models eval loads at once, each in a Serve replica of its own (14 fitted in 23 GB, with 12-14 GB left free): a large
# --seeds run is answered in waves of this many. Models whose answers are all stored are not loaded at all.
EVAL_MODELS_AT_ONCE = 8
# SEED (quality_report): the teacher's sampling seed, and the training seed whose stages keep the plain method name
OPD_GROUP = 2  # opd rollouts per prompt (training.opd.group_size)
SPLITS = {False: "test", True: "dev"}
MAX_OPERAND = 30  # 1944 distinct problems: 1371 train, 197 dev, 376 test (distill_ray/data/sources.py)
ARITHMETIC = f"procedural:arithmetic?max_operand={MAX_OPERAND}&split={{split}}"
# The problem sets (--benchmark): where each split's problems come from (a source spec as dataset.instruction_path),
# how a reference reads (dataset.answer_format), and the prompt budget in tokens: training's max_length is this plus
# --max-new-tokens (the first 300 GSM8K problems of each file take at most 213 tokens with the SmolLM2 chat template;
# 2 of its 7473 train prompts take over 256). The user turn is the eval preset's of the same name
# (distill_ray/prompts.py BENCHMARK_TEMPLATES), in generation and training too.
PROBLEM_SETS = {
    "arithmetic": {"splits": {s: ARITHMETIC.format(split=s) for s in ("train", "dev", "test")},
                   "answer_format": "plain", "prompt_tokens": 128},
    "gsm8k": {"splits": {"train": "bundled:gsm8k/train", "test": "bundled:gsm8k/test"},
              "answer_format": "gsm8k", "prompt_tokens": 256},
}  # fmt: skip
# Where GSM8K's defaults differ from arithmetic's: its worked answers run to a few hundred tokens (the 135M teacher cut
# 47% of its replies at 256), and its whole test split (1319 problems) would take hours to answer on CPU: the issue's
# 300 held-out problems, --eval-problems 1319 for all of them.
GSM8K_DEFAULTS = dict(max_new_tokens=512, eval_problems=300)
# What a method trains on, beyond its own stage (dpo and opd start from sft_all's model).
NEEDS = {
    "sft_all": ["generate"], "sft_best": ["generate", "curate"], "advdistill": ["generate", "curate"],
    "curriculum": ["generate"], "kd": ["generate", "logits"], "dpo": ["generate", "pairs", "sft_all"],
    "opd": ["generate", "sft_all"],
}  # fmt: skip
DATA_STAGES = ("generate", "curate", "pairs", "logits")
DIFFICULTY = "difficulty"  # the in-process step between the two runs, recorded in the ledger like a stage


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (default runs/distill_quality, runs/distill_quality_gsm8k with "
                   "--benchmark gsm8k)")
    p.add_argument("--benchmark", choices=sorted(PROBLEM_SETS), default="arithmetic",
                   help="problem set for training and held-out problems (default arithmetic)")
    p.add_argument("--quick", action="store_true", help="tiny models, a handful of problems, 2 steps: a smoke test")
    p.add_argument("--methods", help=f"comma list of {', '.join(METHODS)} (default all; --quick "
                   f"{','.join(QUICK_METHODS)})")  # fmt: skip
    d = DEFAULTS
    p.add_argument("--train-problems", type=int,
                   help=f"train-split problems the teacher answers (default {d['train_problems']})")
    p.add_argument("--eval-problems", type=int, help="held-out problems (default: arithmetic's whole split, 376 test / "
                   "197 dev; GSM8K 300 of 1319)")
    p.add_argument("--dev", action="store_true", help="evaluate on the dev split (choosing settings), not test; "
                   "arithmetic only")
    p.add_argument("--samples", type=int, help=f"teacher replies per problem and temperature (default {d['samples']})")
    p.add_argument("--temperatures", help=f"comma list of sampling temperatures (default {d['temperatures']})")
    p.add_argument("--max-new-tokens", type=int, help=f"reply cap, generation and eval (default {d['max_new_tokens']})")
    p.add_argument("--steps", type=int, help=f"optimizer steps of every trainer (default {d['steps']})")
    p.add_argument("--seeds", default=str(SEED),
                   help=f"comma list of training seeds, each method trained once per seed (default {SEED}; another "
                        "seed S names the stage <method>_sS)")  # fmt: skip
    p.add_argument("--lr", type=float, help=f"peak learning rate of every trainer but dpo and opd (default {d['lr']})")
    p.add_argument("--dpo-lr", type=float, help=f"peak learning rate of dpo (default {d['dpo_lr']})")
    p.add_argument("--opd-lr", type=float, help=f"peak learning rate of opd (default {d['opd_lr']})")
    p.add_argument("--batch-size", type=int,
                   help=f"sequences per optimizer step, a multiple of {WORKERS} (default {d['batch_size']})")
    p.add_argument("--student", help=f"base student spec (default {DEFAULTS['student']})")
    p.add_argument("--teacher", help=f"teacher spec (default {DEFAULTS['teacher']})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override as in `distill-ray run --set` (stages.<name>.* reaches one stage)")
    p.add_argument("--fresh", action="store_true", help="delete earlier outputs and the ledger, start over")
    p.add_argument("--verbose", action="store_true", help="Ray's INFO output on the console")
    args = p.parse_args(argv)
    gsm8k = args.benchmark == "gsm8k"
    args = fill_defaults(args, {**DEFAULTS, **GSM8K_DEFAULTS} if gsm8k else DEFAULTS, QUICK)
    if args.out is None:  # one folder per problem set: switching sets in one folder would redo every stage
        args.out = "runs/distill_quality" + ("_gsm8k" if gsm8k else "")
    if args.dev and SPLITS[True] not in PROBLEM_SETS[args.benchmark]["splits"]:
        p.error(f"--dev: {args.benchmark} has no dev split here (its bundled files are train and test); choose "
                "settings on arithmetic's dev split")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        p.error(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    if {"dpo", "opd"} & set(args.methods) and "sft_all" not in args.methods:
        args.methods.insert(0, "sft_all")  # dpo and opd start from sft_all's model
    args.temperatures = [float(t) for t in str(args.temperatures).split(",")]
    try:
        args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds: a comma list of integers, got {args.seeds!r}")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        p.error(f"--seeds: distinct non-negative integers, at least one, got {args.seeds}")
    for item in args.set:  # every trained stage sets its seed from its name: a --set seed would be ignored or lie
        if item.split("=", 1)[0].split(".")[-2:] == ["training", "seed"]:
            p.error(f"--set {item}: the training seed is chosen with --seeds (stage <method>_sS trains with seed S)")
    held_out = set_size(args.benchmark, SPLITS[args.dev])
    if args.eval_problems is None:
        args.eval_problems = held_out
    args.eval_source = PROBLEM_SETS[args.benchmark]["splits"][SPLITS[args.dev]]  # the report names it
    for key, split, most in (("eval_problems", SPLITS[args.dev], held_out),
                             ("train_problems", "train", set_size(args.benchmark, "train"))):
        if getattr(args, key) > most:
            p.error(f"--{key.replace('_', '-')}: the {args.benchmark} {split} split holds only {most} distinct "
                    "problems")
    for key in ("train_problems", "eval_problems", "samples", "max_new_tokens", "steps", "batch_size"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1")
    if "curriculum" in args.methods and args.steps < 2:  # one step per phase at least: it would train more
        p.error(f"--steps: curriculum trains two phases (medium, then medium + hard), so at least 2, got {args.steps}")
    if args.batch_size % WORKERS:
        p.error(f"--batch-size must be a multiple of {WORKERS} (the workers), got {args.batch_size}")
    if "opd" in args.methods and args.batch_size % (WORKERS * OPD_GROUP):  # whole prompts of G rollouts per worker
        p.error(f"--batch-size: opd samples {OPD_GROUP} rollouts per prompt on each of {WORKERS} workers, so a "
                f"multiple of {WORKERS * OPD_GROUP}, got {args.batch_size}")
    return args


def set_size(benchmark: str, split: str) -> int:
    """How many problems `split` of a problem set holds: arithmetic's distinct questions, or a bundled file's lines."""
    if benchmark == "arithmetic":
        return split_size(MAX_OPERAND, split)
    path = resolve_source(PROBLEM_SETS[benchmark]["splits"][split]).path
    with path.open("rb") as lines:
        return sum(1 for line in lines if line.strip())


# ---- training seeds: one stage per method and seed ------------------------------------------------------------


def trained_stages(methods: list[str], seeds: list[int]) -> list[str]:
    """Every (method, seed) stage, in pipeline order: all seeds of a method before the next method, so sft_all_sS is
    trained before the dpo_sS and opd_sS that start from it."""
    return [seeded(m, s) for m in METHODS if m in methods for s in seeds]


def needs(stage: str) -> list[str]:
    """The stages a trained stage reads (NEEDS), with sft_all at the stage's own seed."""
    method, seed = method_seed(stage)
    return [seeded(n, seed) if n in METHODS else n for n in NEEDS[method]]


# ---- the ledger (pure: plain data in and out) -----------------------------------------------------------------


# What each stage's output depends on: a stage is redone (its old folder deleted first) only when one of these
# changes, so adding a method or resizing the eval reuses the teacher's replies and the trained students. A --set
# item counts for the stages it reaches and those downstream of them (`upstream`): `stages.dpo.*` redoes dpo and
# eval, an item outside `stages.` redoes everything.
DATA_ARGS = ("teacher", "train_problems", "samples", "temperatures", "max_new_tokens", "quick", "set")
TRAIN_ARGS = DATA_ARGS + ("student", "steps", "lr", "batch_size")
EVAL_ARGS = TRAIN_ARGS + ("eval_problems", "dev", "methods")
OWN_LR = ("dpo_lr", "opd_lr")  # the methods trained at their own rate


def stage_args(stage: str) -> tuple[str, ...]:
    if stage == "eval":  # (and the own rates of the chosen methods, and the seeds: see fingerprint)
        return EVAL_ARGS
    if f"{method_seed(stage)[0]}_lr" in OWN_LR:
        return TRAIN_ARGS + (f"{method_seed(stage)[0]}_lr",)
    return DATA_ARGS if stage in DATA_STAGES or stage == DIFFICULTY else TRAIN_ARGS


def upstream(stage: str) -> set[str]:
    """The stages whose outputs `stage` reads, itself included (eval reads them all)."""
    if stage == "eval":
        return {*DATA_STAGES, DIFFICULTY, *METHODS, "eval"}
    if stage in DATA_STAGES or stage == DIFFICULTY:
        return {"generate", stage}
    found = {stage} | ({DIFFICULTY} if method_seed(stage)[0] == "curriculum" else set())
    for need in needs(stage):
        found |= upstream(need)
    return found


def fingerprint(args: argparse.Namespace, stage: str) -> str:
    """What makes a stage's output reusable: the arguments it depends on (`stage_args`; of the --set items, those
    that reach it or a stage it reads), hashed. A trained stage's seed is in its name, so it is not hashed; eval
    hashes the seeds only when they are not the default, so runs from before --seeds keep their eval; every stage
    hashes the problem set only when it is not arithmetic, for the same reason."""
    chosen = {k: sorted(getattr(args, k)) if k == "methods" else getattr(args, k) for k in stage_args(stage)}
    if args.benchmark != "arithmetic":
        chosen["benchmark"] = args.benchmark
    reads = upstream(stage) | (set(trained_stages(args.methods, args.seeds)) if stage == "eval" else set())
    chosen["set"] = overrides_for(args.set, sorted(reads))
    if stage == "eval":
        chosen |= {f"{m}_lr": getattr(args, f"{m}_lr") for m in args.methods if f"{m}_lr" in OWN_LR}
        if args.seeds != [SEED]:
            chosen["seeds"] = sorted(args.seeds)
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:16]


def new_ledger() -> dict:
    return {"stages": {}}


def pending(planned: list[str], ledger: dict, args: argparse.Namespace) -> list[str]:
    """The planned stages the ledger does not list as finished with this invocation's arguments, in order."""
    return [name for name in planned
            if ledger["stages"].get(name, {}).get("fingerprint") != fingerprint(args, name)]  # fmt: skip


def record_finished(ledger: dict, summary: dict) -> list[str]:
    """Copy every stage `summary` (summary.json) lists as finished into the ledger, with the fingerprint it ran under
    (`ledger["running"]`, written before the run starts, so a run killed with other arguments is recorded as what it
    was); returns the new ones. The runner adds a stage to the summary only once it has finished, so a failed or
    killed stage is not there; a stage with no running fingerprint is of unknown origin and not recorded."""
    added = []
    running = ledger.get("running", {})
    for stage in summary.get("stages", []):
        name, fp = stage["name"], running.get(stage["name"])
        if fp is None or ledger["stages"].get(name, {}).get("fingerprint") == fp:
            continue
        added.append(name)
        ledger["stages"][name] = {k: stage.get(k) for k in ("job_type", "seconds", "rows_out", "metrics")}
        ledger["stages"][name]["fingerprint"] = fp
    return added


# Stages whose stored parts name everything they depend on, the weights of each model included
# (`distill_ray.models.loading.model_identity`): eval keeps every model's answers, so adding a method, or training
# one again, asks only the models that are new or changed.
SELF_CHECKING = ("eval",)


def forget_stale(out: Path, ledger: dict, names: list[str]) -> None:
    """Delete the outputs of `names` (about to be redone) so no stage resumes from parts written with other
    arguments, and drop them from the ledger; a SELF_CHECKING stage's outputs stay for it to sort out."""
    for name in names:
        if ledger["stages"].pop(name, None) is not None or (out / name).exists():
            if name not in SELF_CHECKING:
                shutil.rmtree(out / name, ignore_errors=True)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_ledger(out: Path, ledger: dict) -> None:
    tmp = out / "ledger.json.tmp"
    tmp.write_text(json.dumps(ledger, indent=2, default=str))
    tmp.replace(out / "ledger.json")


# ---- the plan: one pipeline config, in two runs ------------------------------------------------------------------


def planned_stages(methods: list[str], seeds: list[int] = (SEED,)) -> tuple[list[str], list[str]]:
    """(data stages, train + eval stages) the methods need at these training seeds, in pipeline order."""
    needed = {s for m in methods for s in NEEDS[m]}
    data = [s for s in DATA_STAGES if s in needed]
    return data, trained_stages(methods, list(seeds)) + ["eval"]


def stage_sections(args: argparse.Namespace) -> dict[str, dict]:
    """Every stage's own config; `{output_dir}` is the runner's interpolation of the run folder."""
    generations, kept = "{output_dir}/generate/generations", "{output_dir}/generate/kept"
    half = max(1, args.steps // 2)  # parse_args refuses --steps 1 with the curriculum
    curriculum = [{"name": "medium", "difficulty": ["medium"], "max_steps": half},
                  {"name": "medium_hard", "difficulty": ["medium", "hard"], "max_steps": max(1, args.steps - half)}]
    models = {"base": args.student, "teacher": args.teacher}
    models |= {name: f"{{output_dir}}/{name}/model" for name in trained_stages(args.methods, args.seeds)}
    problems = PROBLEM_SETS[args.benchmark]
    bench = {"name": BENCHMARK.format(benchmark=args.benchmark, split=SPLITS[args.dev]), "preset": args.benchmark,
             "limit": args.eval_problems, "path": args.eval_source}
    train = {"instruction_path": problems["splits"]["train"], "answer_format": problems["answer_format"],
             "limit": args.train_problems, "seed": SEED}
    # opd's reverse KL before and after training, on dev prompts; GSM8K has none: unset, its first train prompts
    opd_eval = problems["splits"].get("dev")
    sections = {
        "generate": {"job_type": "generate", "dataset": train},
        "curate": {"job_type": "curate", "dataset": {"labeled_path": generations}},
        "pairs": {"job_type": "pairs", "dataset": {"labeled_path": generations}},
        "logits": {"job_type": "logits", "dataset": {"labeled_path": kept}},
        "sft_all": {"job_type": "sft", "dataset": {"labeled_path": kept}},
        # AdvDistill's baseline: the same groups, SFT on each one's highest-advantage response
        "sft_best": {"job_type": "advdistill", "dataset": {"labeled_path": "{output_dir}/curate/groups"},
                     "training": {"advdistill": {"mode": "sft_best"}}},
        "advdistill": {"job_type": "advdistill", "dataset": {"labeled_path": "{output_dir}/curate/groups"},
                       # one group per micro-batch: accumulate so a step sees batch_size groups, as the others do
                       "training": {"gradient_accumulation_steps": args.batch_size // WORKERS}},
        "curriculum": {"job_type": "sft", "dataset": {"labeled_path": f"{{output_dir}}/{DIFFICULTY}/rows.parquet"},
                       "training": {"curriculum": curriculum}},
        "kd": {"job_type": "kd", "dataset": {"labeled_path": kept},
               "training": {"kd": {"logits_path": "{output_dir}/logits/logits"}}},
        "dpo": {"job_type": "dpo", "dataset": {"labeled_path": "{output_dir}/pairs/pairs"},
                "models": {"student": "{output_dir}/sft_all/model"}, "training": {"learning_rate": args.dpo_lr}},
        # G rollouts per prompt, so batch_size / G prompts a step: the same sequences per step as the others;
        # the student's reverse KL on 16 dev prompts before and after training is in its train metrics
        "opd": {"job_type": "opd", "dataset": train,
                "models": {"student": "{output_dir}/sft_all/model"},
                "training": {"learning_rate": args.opd_lr, "lr_scheduler_type": "constant",
                             "per_device_train_batch_size": args.batch_size // (WORKERS * OPD_GROUP),
                             "opd": {"group_size": OPD_GROUP, "max_new_tokens": args.max_new_tokens, "top_k": 8,
                                     "eval_steps": args.steps, "eval_limit": 16,
                                     "eval_path": opd_eval}}},
        "eval": {"job_type": "eval", "evaluation": {"models": models, "benchmarks": [bench], "num_samples": 1,
                                                    "temperature": 0.0, "ks": [1],
                                                    "max_models_deployed": EVAL_MODELS_AT_ONCE}},
    }  # fmt: skip
    for name in trained_stages(args.methods, args.seeds):  # each with its own training seed, in its own section
        method, seed = method_seed(name)
        section = copy.deepcopy(sections[method])
        section.setdefault("training", {})["seed"] = seed
        if name != method and "models" in section:  # dpo and opd start from the sft_all of the same seed
            section["models"]["student"] = f"{{output_dir}}/{seeded('sft_all', seed)}/model"
        sections[name] = section
    return sections


# The teacher's engine slots and the callers that fill them, as in recipes/quickstart.yaml (docs/engines.md, "How
# many slots"): 4 callers x 16 rows keep twice the 64 slots in flight. --quick keeps 2 callers (faster to start).
CALLERS = {False: {"concurrency": 4, "batch_size": 16}, True: {"concurrency": 2, "batch_size": 4}}
SLOTS = {False: {"max_batch_size": 64, "max_ongoing_requests": 128}, True: {"max_batch_size": 16}}


def pipeline_raw(args: argparse.Namespace, out: Path, names: list[str], state_dir: Path, port: int) -> dict:
    """The pipeline config (before validation) with only the stages `names`, in that order."""
    quick = args.quick  # a random tiny teacher is never right: keep every reply so the trainers get rows
    sections = stage_sections(args)
    return {
        "job_type": "pipeline",
        "output_dir": str(out),
        "ray": {"state_dir": str(state_dir)},
        "models": {"teacher": args.teacher, "student": args.student},
        "inference": {"max_new_tokens": args.max_new_tokens, "temperature": args.temperatures,
                      "user_template": BENCHMARK_TEMPLATES[args.benchmark],
                      "num_samples": args.samples, "seed": SEED, **CALLERS[quick],
                      "serve": {"port": port, **SLOTS[quick], "num_cpus": 0.5, "torch_threads": 2}},
        "distillation": {"keep": "all" if quick else "correct"},
        "processing": {"curate": {"min_correct": 1}, "pairs": {"mode": "correctness", "max_pairs_per_problem": 1}},
        "training": {"max_steps": args.steps, "learning_rate": args.lr, "warmup_ratio": 0.1,
                     "per_device_train_batch_size": args.batch_size // WORKERS, "num_workers": WORKERS,
                     "cpus_per_worker": 0.5, "save_steps": args.steps, "seed": SEED,
                     "max_length": args.max_new_tokens + PROBLEM_SETS[args.benchmark]["prompt_tokens"]},
        "stages": [{"name": n, **sections[n]} for n in names],
    }  # fmt: skip


def overrides_for(items: list[str], names: list[str]) -> list[str]:
    """The --set items that apply to a run of `names` (a stages.<name>.* item reaches only its own stage's run), as
    the runner needs them: an item for a method (stages.kd.*) reaches that method at every seed, so it is repeated
    for each of its other seeds' stages in `names` (stages.kd_s8.*). Those copies come before the items that name a
    stage themselves, so an item for one seed's stage wins over its method's, whatever the order given."""
    general, copies, own = [], [], []
    for item in items:
        key, value = item.split("=", 1) if "=" in item else (item, None)
        parts = key.split(".")
        if parts[0] != "stages" or len(parts) < 2:
            general.append(item)
            continue
        for name in names:
            if name == parts[1]:
                own.append(item)
            elif parts[1] in METHODS and method_seed(name)[0] == parts[1]:
                copied = ".".join(["stages", name, *parts[2:]])
                copies.append(copied if value is None else f"{copied}={value}")
    return general + copies + own


# ---- running -------------------------------------------------------------------------------------------------


def run_stages(args: argparse.Namespace, out: Path, ledger: dict, names: list[str], state_dir: Path) -> None:
    """One run of the runner over `names`; whatever it finished goes into the ledger, even when it fails."""
    from distill_ray.config import apply_overrides, build_config
    from jobs.runner import run_config

    raw = pipeline_raw(args, out, names, state_dir, free_loopback_port())
    cfg = build_config(apply_overrides(raw, overrides_for(args.set, names)))
    log.info("running %s (finished before: %s)", ", ".join(names), ", ".join(ledger["stages"]) or "none")
    (out / "summary.json").unlink(missing_ok=True)  # so only this run's stages can be read back under `running`
    ledger["running"] = {name: fingerprint(args, name) for name in names}
    write_ledger(out, ledger)
    try:
        run_config(cfg, verbose=args.verbose)
    finally:
        added = record_finished(ledger, read_json(out / "summary.json") or {})
        ledger.pop("running", None)
        write_ledger(out, ledger)
        log.info("ledger: %s finished in this run", ", ".join(added) or "nothing")


def run_difficulty(args: argparse.Namespace, out: Path, ledger: dict) -> None:
    """The curriculum's rows: generate's kept replies with a `difficulty` column (quality_report.difficulty_rows)."""
    from quality_report import difficulty_rows

    started = time.time()
    counts = difficulty_rows(out / "generate" / "kept", out / DIFFICULTY / "rows.parquet")
    ledger["stages"][DIFFICULTY] = {"job_type": "in-process", "seconds": round(time.time() - started, 2),
                                    "rows_out": sum(counts.values()), "metrics": counts,
                                    "fingerprint": fingerprint(args, DIFFICULTY)}  # fmt: skip
    write_ledger(out, ledger)


def open_ledger(args: argparse.Namespace, out: Path) -> dict | str:
    """This invocation's ledger (created, or read back with what a killed run finished), or why to refuse."""
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    ledger = read_json(out / "ledger.json")
    if ledger is None:
        if any(out.iterdir()):
            return f"{out} holds outputs but no ledger.json; use another --out or --fresh"
        ledger = new_ledger()
    else:  # a run killed before its finally: summary.json still lists the stages it finished
        record_finished(ledger, read_json(out / "summary.json") or {})
        ledger.pop("running", None)
    write_ledger(out, ledger)
    return ledger


def main(argv: list[str] | None = None) -> int:
    from distill_ray.errors import StageFailed, UserError
    from distill_ray.log import configure_logging
    from jobs.signals import Interrupted, stop_on_signals
    from quality_report import build_report, print_table

    args = parse_args(argv)
    configure_logging()
    out = Path(args.out).resolve()
    ledger = open_ledger(args, out)
    if isinstance(ledger, str):
        log.error("distill_quality: %s", ledger)
        return 2
    data, train = planned_stages(args.methods, args.seeds)
    try:  # SIGINT / SIGTERM unwind like an error, so the ledger records what finished and Ray stops cleanly
        with stop_on_signals(), ray_state_dir("dq") as state_dir:
            if todo := pending(data, ledger, args):
                forget_stale(out, ledger, todo)
                run_stages(args, out, ledger, todo, state_dir)
            if "curriculum" in args.methods and pending([DIFFICULTY], ledger, args):
                run_difficulty(args, out, ledger)
            if todo := pending(train, ledger, args):
                forget_stale(out, ledger, todo)
                run_stages(args, out, ledger, todo, state_dir)
    except (UserError, StageFailed, Interrupted) as exc:
        log.error("distill_quality: %s (finished stages are in %s; the same command resumes)", exc, out / "ledger.json")
        return exc.exit_code
    report = build_report(args, out, ledger)
    print_table(report)
    print(json.dumps(report["headline"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
