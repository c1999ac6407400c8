"""The pipeline runner: what `distill-ray run` executes, on the cluster or the embedded one.

A single job is a pipeline of one stage. Stages run in order, each in `<output_dir>/<stage>/` (a single
job writes straight into `output_dir`); summary.json is rewritten after every stage. Inputs are checked
before Ray starts, so a missing file costs no cluster start-up.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path

from cluster.embedded import ray_session, state_paths
from distill_ray.config import JobConfig, PipelineConfig
from distill_ray.data.sources import Source, resolve_source, split_size
from distill_ray.errors import ConfigError, StageFailed, UserError, one_line
from distill_ray.eval.eval_sets import resolve_benchmarks
from distill_ray.models.teachers import Teacher, by_engine, teacher_roster
from distill_ray.summary import RunSummary, StageResult
from jobs.console import RunConsole
from jobs.signals import Interrupted
from jobs.stage import StageEnv

log = logging.getLogger(__name__)

# The dataset key each job reads its input from.
INPUT_KEY = {
    "generate": "instruction_path",
    "eval": "instruction_path",
    "synthesize": "instruction_path",
    "grpo": "instruction_path",
    "opd": "instruction_path",
}
# every other job except collect (which names its sources itself) reads dataset.labeled_path


def stages_of(cfg: JobConfig | PipelineConfig) -> list[tuple[str, JobConfig]]:
    if isinstance(cfg, PipelineConfig):
        return [(s.name, s.job) for s in cfg.stages]
    return [(cfg.job_type, cfg)]


def preflight(cfg: JobConfig | PipelineConfig, starts_ray: bool = False) -> None:
    """Raise a UserError now for anything we can tell is wrong before starting Ray.

    `starts_ray`: the caller (run, serve) is about to start or join Ray from this process. A `ray.cluster_only`
    config is then refused unless a cluster is named (ray.address or $RAY_ADDRESS), and fully checked when one
    is; for validate and submit (False) only its shape is checked: its inputs and models are the cluster's paths.
    """
    state_paths(cfg.ray)
    here = not cfg.ray.cluster_only
    if cfg.ray.cluster_only and starts_ray:
        _require_cluster(cfg)
        here = True  # on the cluster (its driver): the paths must exist here
    run_dir = Path(cfg.output_dir).resolve()
    for name, job in stages_of(cfg):
        prefix = f"stages.{name}." if isinstance(cfg, PipelineConfig) else ""
        if job.job_type == "grpo" and job.training.grpo.engine == "openrlhf":
            continue  # data and models are the GPU cluster's (hub names, its paths); the launcher checks the rest
        roster = teacher_roster(job)
        for teacher in by_engine(roster).get("vllm", []):
            from serve.vllm_teacher import check_vllm_inference  # needs no vLLM

            check_vllm_inference(teacher.inference)
        inputs, models = _inputs(job, prefix), _model_specs(job, prefix, roster)  # the shape: inputs named
        if not here:
            continue
        for key, path, limit in inputs:
            if _produced_by_run(path, run_dir):
                continue
            if input_key(job) == "labeled_path":
                if not Path(path).exists():
                    raise ConfigError(key, f"'{path}' does not exist")
            else:
                _check_size(resolve_source(path, key=key), limit, key.rsplit(".", 1)[0] + ".limit")
        for key, spec in models:
            if ":" not in spec and not _produced_by_run(spec, run_dir) and not (Path(spec) / "config.json").is_file():
                raise ConfigError(key, f"'{spec}' is not a local HF model folder")


def _require_cluster(cfg: JobConfig | PipelineConfig) -> None:
    """A cluster-only config runs where its paths are: without a cluster to join, refuse in one line (exit 2) that
    names the key and the first model that is not on this machine."""
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    absent = [(key, spec) for name, job in stages_of(cfg)
              for key, spec in _model_specs(job, f"stages.{name}." if isinstance(cfg, PipelineConfig) else "",
                                            teacher_roster(job))
              if ":" not in spec and not (Path(spec) / "config.json").is_file()]  # fmt: skip
    where = f" ({absent[0][0]} '{absent[0][1]}' is not on this machine)" if absent else ""
    raise ConfigError("ray.cluster_only", f"this config runs on a Ray cluster only{where}: submit it with "
                      "`distill-ray submit CONFIG --address http://HEAD:8265`, or set ray.address")  # fmt: skip


def _inputs(job: JobConfig, prefix: str) -> list[tuple[str, str, int | None]]:
    """(config key, source spec, row limit) of every input the job reads."""
    if job.job_type == "eval" and job.evaluation.benchmarks:
        benches = resolve_benchmarks(job.evaluation.benchmarks, job.dataset, job.inference.user_template)
        return [(f"{prefix}evaluation.benchmarks.{b.name}.path", b.dataset.instruction_path, b.dataset.limit)
                for b in benches]  # fmt: skip
    if job.job_type == "collect":
        return []  # checked by the collect job itself (processing.collect.sources)
    key = input_key(job)
    path = getattr(job.dataset, key)
    if path is None:
        raise ConfigError(f"{prefix}dataset.{key}", f"job '{job.job_type}' needs an input")
    return [(f"{prefix}dataset.{key}", path, job.dataset.limit)]


def _check_size(source: Source, limit: int | None, key: str) -> None:
    """A procedural source asked for more distinct problems than its split holds fails here, before Ray starts,
    naming the limit's key (it would otherwise fail when its stage reads, after the stages before it ran)."""
    if source.kind != "procedural" or not limit:
        return
    most = split_size(source.max_operand, source.split)
    if limit > most:
        raise ConfigError(key, f"asks for {limit} problems; procedural arithmetic with max_operand="
                          f"{source.max_operand} has only {most} in split '{source.split}'")  # fmt: skip


def input_key(job: JobConfig) -> str:
    """The dataset key a job reads its rows from."""
    if job.job_type == "synthesize" and job.processing.synthesize.operator.startswith("cot_"):
        return "labeled_path"  # the CoT operators rewrite rows of an earlier stage
    return INPUT_KEY.get(job.job_type, "labeled_path")


def _model_specs(job: JobConfig, prefix: str, roster: list[Teacher]) -> list[tuple[str, str]]:
    # Only teachers on our engine load a local model here: a vllm teacher may be a hub name or bucket URI
    # that only the GPU cluster resolves, and an openai teacher is the external API's model id.
    ours = [t for t in roster if t.engine == "transformers"]
    section = "models.teachers." if job.models.teachers else "models.teacher"
    specs = [(prefix + section + (t.name if job.models.teachers else ""), t.spec) for t in ours]
    specs.append((f"{prefix}models.student", job.models.student))
    if job.job_type == "grpo" and not job.reward.url:  # the job deploys the reward service from these
        specs += [(f"{prefix}reward.{k}", getattr(job.reward, k)) for k in ("rv_model", "cd_model")]
    specs.append((f"{prefix}evaluation.model", job.evaluation.model))
    specs += [(f"{prefix}evaluation.models.{label}", spec) for label, spec in job.evaluation.models.items()]
    return [(key, spec) for key, spec in specs if spec]


def _produced_by_run(path: str, run_dir: Path) -> bool:
    """Outputs of earlier stages do not exist yet at preflight time; they live under the run's folder."""
    try:
        return Path(path).resolve().is_relative_to(run_dir)
    except (OSError, ValueError):
        return False


def run_config(cfg: JobConfig | PipelineConfig, verbose: bool = False) -> RunSummary:
    """Run every stage; raises StageFailed (exit 1) or UserError (exit 2) after recording the failure.

    The console shows our messages, a bar per stage and Ray's warnings; Ray's INFO output goes to
    `<output_dir>/logs/` (jobs/console.py) unless `verbose`."""
    preflight(cfg, starts_ray=True)
    run_dir = Path(cfg.output_dir)
    summary = RunSummary(output_dir=str(run_dir))
    summary.write()
    try:
        with RunConsole(run_dir / "logs", verbose) as console, ray_session(cfg.ray) as ray_ctx:
            console.attach(ray_ctx.logs_dir)
            for name, job in stages_of(cfg):
                stage_dir = run_dir if isinstance(cfg, JobConfig) else run_dir / name
                stage_dir.mkdir(parents=True, exist_ok=True)
                env = StageEnv(name=name, output_dir=stage_dir, rejected_dir=run_dir / "rejected", ray=ray_ctx)
                summary.add(_run_stage(job, env))
    except (UserError, StageFailed) as exc:
        summary.finish("failed", str(exc))
        raise
    except KeyboardInterrupt as exc:  # Interrupted (a stop signal, jobs/signals.py) names its stage and signal
        summary.finish("failed", str(exc) if isinstance(exc, Interrupted) else "interrupted")
        raise
    summary.finish("ok")
    return summary


def _run_stage(job: JobConfig, env: StageEnv) -> StageResult:
    from jobs.job_types import JOB_TYPES  # every job's imports (seconds); `validate` never gets here

    log.info("stage '%s' (%s) -> %s", env.name, job.job_type, env.output_dir)
    started = time.time()
    try:
        result = JOB_TYPES[job.job_type](job, env)
    except UserError:
        raise
    except Interrupted as exc:
        exc.stage = env.name  # what it committed (parts, checkpoints) stays; the same command resumes
        raise
    except Exception as exc:  # noqa: BLE001 - any runtime failure becomes "stage X failed" (exit 1)
        log.debug("stage '%s' failed", env.name, exc_info=True)
        traceback.print_exc()
        raise StageFailed(env.name, one_line(exc)) from exc
    result.seconds = round(time.time() - started, 2)
    log.info("stage '%s' done in %ss: %d in, %d out, %d rejected", env.name, result.seconds, result.rows_in,
             result.rows_out, result.rows_rejected)  # fmt: skip
    return result


def serve_forever(cfg: JobConfig | PipelineConfig, service: str, verbose: bool = False) -> None:
    """`distill-ray serve teacher|reward`: deploy the app, print its URL, keep serving until a stop signal.

    The CLI turns SIGINT/SIGTERM into `Interrupted`; on the way out `ray_session` deletes the deployments and
    stops the embedded Ray, and the exception carries the exit code (130/143) up to the CLI.

    The first stage's config is used: `models.teachers` (all on our engine, in one app) or `models.teacher`, with
    `inference` (teacher); the `reward` section (reward). Serve's logs (access logs included) go to
    `<output_dir>/logs/` unless `verbose` (jobs/console.py).
    """
    job = stages_of(cfg)[0][1]
    if service == "reward":
        job.reward.check_model_folders()  # before Ray starts
    with RunConsole(Path(cfg.output_dir) / "logs", verbose) as console, ray_session(cfg.ray) as ray_ctx:
        console.attach(ray_ctx.logs_dir)
        if service == "reward":
            from serve.reward import deploy_reward

            url = deploy_reward(job.reward, app_name="reward").base_url
        else:
            from distill_ray.models.teachers import by_engine, teacher_roster
            from serve.teacher import deploy_teachers
            from serve.vllm_teacher import deploy_vllm_teachers

            groups = by_engine(teacher_roster(job))
            ours, on_vllm = groups.get("transformers", []), groups.get("vllm", [])
            if not ours and not on_vllm:
                raise ConfigError("models.teachers", "no teacher runs on the transformers or vllm engine; "
                                                     "nothing to serve")  # fmt: skip
            urls = []
            if ours:
                endpoint = deploy_teachers(ours, job.inference.serve, app_name="teacher")
                urls.append(endpoint.base_url)
                log.info("serving %s (send it as `model`)", ", ".join(endpoint.served_names))
            if on_vllm:
                urls.append(deploy_vllm_teachers(on_vllm, "teacher-vllm" if ours else "teacher"))
            url = "\n".join(urls)
        print(url, flush=True)  # the command's output: where the service answers
        from cluster.embedded import metrics_url

        log.info("Prometheus metrics (docs/metrics.md): %s", metrics_url())
        if not ray_ctx.embedded:
            return  # the app lives on in the cluster
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("stopping the %s service", service)
            raise
