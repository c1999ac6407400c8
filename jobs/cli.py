"""The `distill-ray` command line.

    distill-ray run CONFIG [--set key=value ...]        run a job or pipeline (exit 0 / 1 / 2)
    distill-ray eval CONFIG [--set ...]                 run CONFIG as an eval job (side-by-side report)
    distill-ray validate CONFIG [--set ...] [--explain] check a config without running it
    distill-ray serve teacher CONFIG [--set ...]        deploy the teacher service, print its URL
    distill-ray serve reward CONFIG [--set ...]         deploy the reward service (RV/CD models, verifier), print URL
    distill-ray submit CONFIG --address URL [--wait]    submit a run to a Ray cluster's Jobs API
    distill-ray jobs list|status|logs|stop [ID]         the cluster's jobs (--address URL or $RAY_ADDRESS)
    distill-ray models prepare SPEC [SPEC ...]          materialise builtin/tiny models into the cache
    distill-ray grade FILE --out OUT.jsonl              re-grade replies against references (the pipeline's grader)

The console script enters here, at the top layer. Parsing and validation live here; execution is handed to
`jobs.runner`, which imports Ray and the jobs only once a command needs them, so `validate` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from distill_ray.errors import StageFailed, UserError
from distill_ray.log import configure_logging
from jobs import runner  # imports no Ray at module level
from jobs.signals import Interrupted, stop_on_signals


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill-ray", description="Distil reasoning models on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("config", help="YAML or JSON config file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key, e.g. --set inference.max_new_tokens=64 (repeatable)")  # fmt: skip
        return p

    def with_verbose(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--verbose", action="store_true", help="also show Ray's own output on the console (Serve "
                       "access logs, Ray Data progress); it always goes to <output_dir>/logs/")  # fmt: skip
        return p

    with_verbose(with_config(sub.add_parser("run", help="run a job or a pipeline")))
    with_verbose(with_config(sub.add_parser("eval", help="run a config as an eval job: models x benchmarks -> report")))
    validate = with_config(sub.add_parser("validate", help="validate a config and print the resolved form"))
    validate.add_argument("--explain", action="store_true", help="also print every key with its description")
    serve = sub.add_parser("serve", help="deploy a service and print its URL")
    services = serve.add_subparsers(dest="service", required=True)
    with_verbose(with_config(services.add_parser("teacher", help="the teacher LLM, OpenAI-compatible "
                                                                  "(/v1/chat/completions)")))  # fmt: skip
    with_verbose(with_config(services.add_parser("reward", help="reward models + verifier (/v1/rewards, "
                                                                "OpenRLHF /get_reward)")))  # fmt: skip
    submit = with_config(sub.add_parser("submit", help="submit a run to a Ray cluster (Jobs API)"))
    submit.add_argument("--address", help="Jobs API address, e.g. http://head:8265 (default: $RAY_ADDRESS)")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end; exit 1 unless it succeeds")
    submit.add_argument("--working-dir", help="folder uploaded as the job's working_dir (default: this checkout)")
    submit.add_argument("--pip", action="append", default=[], metavar="SPEC",
                        help="pip requirement installed for the job (runtime_env pip; repeatable)")  # fmt: skip
    submit.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable of the job (runtime_env env_vars; repeatable)")  # fmt: skip
    submit.add_argument("--submission-id", help="the job's id (default: Ray picks one)")
    submit.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the cluster to answer")
    jobs = sub.add_parser("jobs", help="list, inspect, follow or stop the cluster's jobs")
    jobs.add_argument("action", choices=["list", "status", "logs", "stop"])
    jobs.add_argument("submission_id", nargs="?", help="the job (all but list)")
    jobs.add_argument("--address", help="Jobs API address, e.g. http://head:8265 (default: $RAY_ADDRESS)")
    jobs.add_argument("--follow", action="store_true", help="logs: keep printing until the job ends")
    jobs.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the cluster to answer")
    grade = sub.add_parser("grade", help="grade a JSONL / Parquet file of replies with the pipeline's grader")
    grade.add_argument("file", help="replies: .jsonl, .json or Parquet (a file or a stage's folder)")
    grade.add_argument("--out", required=True, help="where to write one JSON line per input row")
    grade.add_argument("--response-field", default="response", help="field holding the reply (default: response)")
    grade.add_argument("--reference-field", default="reference", help="field holding the reference answer")
    grade.add_argument("--finish-field", default="finish_reason", help="field holding the server's finish_reason")
    grade.add_argument(
        "--format",
        dest="fmt",
        default="auto",
        choices=["auto", "think_answer", "boxed"],
        help="where the final answer must stand (default: auto, see distill_ray/grading/grader.py)",
    )
    grade.add_argument("--timeout", type=float, default=5.0, help="seconds per math-verify call")
    models = sub.add_parser("models", help="model cache")
    prepare = models.add_subparsers(dest="action", required=True).add_parser("prepare")
    prepare.add_argument("specs", nargs="+", help="model specs, e.g. builtin:smollm2-135m-instruct")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    try:
        return _dispatch(args)
    except UserError as exc:
        print(f"distill-ray: {exc}", file=sys.stderr)
        return exc.exit_code
    except StageFailed as exc:
        print(f"distill-ray: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        print(f"distill-ray: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("distill-ray: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "models":
        from distill_ray.models.loading import resolve_model

        for spec in args.specs:
            print(f"{spec} -> {resolve_model(spec, key=spec)}")
        return 0
    if args.command in ("submit", "jobs"):
        return _cluster_command(args)
    if args.command == "grade":
        from distill_ray.grading.grade_file import GradeFields, grade_file, summary_line

        fields = GradeFields(args.response_field, args.reference_field, args.finish_field)
        counts = grade_file(args.file, args.out, fields, args.fmt, args.timeout)
        print(summary_line(counts, args.out))
        return 0
    from distill_ray.config import load_config

    overrides = list(args.overrides)
    if args.command == "eval":
        overrides.insert(0, "job_type=eval")  # the config's other sections say what and how to evaluate
    cfg = load_config(args.config, overrides)
    if args.command == "validate":
        runner.preflight(cfg)
        return _validate(cfg, args.explain)
    if args.command == "serve":
        runner.preflight(cfg, starts_ray=True)
        with stop_on_signals():
            runner.serve_forever(cfg, args.service, verbose=args.verbose)
        return 0
    with stop_on_signals():
        summary = runner.run_config(cfg, verbose=args.verbose)  # runs its own preflight before starting Ray
    print(f"[distill-ray] {summary.status}: {summary.output_dir}/summary.json")
    return 0


def _cluster_command(args: argparse.Namespace) -> int:
    from jobs import submit

    if args.command == "jobs":
        if args.action != "list" and not args.submission_id:
            raise UserError(f"jobs {args.action}: give the job's submission id")
        return submit.jobs_command(args.action, args.address, args.submission_id, args.follow, args.timeout)
    return submit.submit(
        submit.Submission(
            config=args.config,
            overrides=list(args.overrides),
            address=args.address,
            working_dir=args.working_dir,
            pip=list(args.pip),
            env=list(args.env),
            submission_id=args.submission_id,
            wait=args.wait,
            timeout_s=args.timeout,
        )
    )


def _validate(cfg, explain: bool) -> int:
    import json

    from distill_ray.config import JobConfig

    stages = getattr(cfg, "stages", None)
    what = f"pipeline of {len(stages)} stage(s): {', '.join(s.name for s in stages)}" if stages else cfg.job_type
    note = " (ray.cluster_only: its models and data are checked on the cluster)" if cfg.ray.cluster_only else ""
    print(f"ok: {what}{note}")
    if explain:
        print(json.dumps(cfg.model_dump(), indent=2))
        for line in explain_fields(JobConfig):
            print(line)
    return 0


def explain_fields(model, prefix: str = "") -> list[str]:
    """`key: description` for every field, recursing into sub-sections (also inside lists and dicts)."""
    import typing

    from pydantic import BaseModel

    lines = []
    for key, field in model.model_fields.items():
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation))
                 if isinstance(a, type) and issubclass(a, BaseModel)]  # fmt: skip
        for arg in typing.get_args(field.annotation):  # list[X], dict[str, X], X | None
            inner += [a for a in typing.get_args(arg) if isinstance(a, type) and issubclass(a, BaseModel)]
        if field.description:
            lines.append(f"{prefix}{key}: {field.description}")
        if inner:
            lines += explain_fields(inner[0], f"{prefix}{key}.")
    return lines


if __name__ == "__main__":
    sys.exit(main())
