"""The eval job deploys every evaluated model once, in one multi-model Serve app, and warns once when its callers
cannot fill the engines' slots; a re-run deploys only the models with answers left to give, in waves of
`evaluation.max_models_deployed`."""

import logging
import threading
import time
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill_ray.config import InferenceConfig, build_config
from jobs.stage import StageEnv


def test_the_models_answer_to_their_labels_and_share_one_replicas_cpu():
    from jobs.eval import eval_roster

    inference = InferenceConfig(serve={"num_cpus": 0.6, "num_gpus": 1, "max_batch_size": 4})
    roster = eval_roster({"before": "tiny:smollm2", "after": "tiny:smollm2", "third": "tiny:smollm2?seed=1"}, inference)
    assert [t.served_name for t in roster] == ["before", "after", "third"]
    assert [t.inference.serve.num_cpus for t in roster] == pytest.approx([0.2] * 3)
    assert {t.inference.serve.max_batch_size for t in roster} == {4} and inference.serve.num_cpus == 0.6
    assert {t.inference.serve.num_gpus for t in roster} == {1}  # loaded at once: each keeps its GPU share


def test_eval_batches_fill_the_slots_unless_configured():
    from jobs.data.generate import warn_if_underfilled
    from jobs.eval import eval_batch_size, eval_roster

    models = {"before": "tiny:smollm2", "after": "tiny:smollm2?seed=1"}
    # callers sized for generation's two temperatures (the quickstart's, once); eval asks one: 4 rows fill 8 of 16
    inference = InferenceConfig(concurrency=2, batch_size=4, temperature=0.0, num_samples=1,
                                serve={"max_batch_size": 16})  # fmt: skip
    assert eval_batch_size(models, inference, None) == 8
    filled = inference.model_copy(update={"batch_size": 8})
    assert warn_if_underfilled("eval", eval_roster(models, filled)) is None
    assert eval_batch_size(models, inference, 3) == 3  # evaluation.batch_size wins
    wide = inference.model_copy(update={"batch_size": 32})
    assert eval_batch_size(models, wide, None) == 32  # never below inference.batch_size
    two_samples = inference.model_copy(update={"num_samples": 2, "serve": inference.serve.model_copy(
        update={"max_replicas": 2})})  # fmt: skip
    assert eval_batch_size(models, two_samples, None) == 8  # 2 replicas x 16 slots / (2 callers x 2 samples)


def test_stored_samples_are_read_back_only_when_every_problem_is_answered(tmp_path):
    """`stored_samples` (what lets eval skip deploying a model) answers None until the store holds every problem id
    under this model's settings, ids not counts: a store of as many answers to other problems is not done."""
    from distill_ray.config import DistillationConfig
    from distill_ray.data import schemas
    from distill_ray.data.part_store import PartCounts, PartStore, fingerprint
    from distill_ray.models.teachers import model_teacher
    from jobs.data.generate import store_settings, stored_samples

    job = build_config({"job_type": "eval", "output_dir": str(tmp_path)})
    teacher = model_teacher("tiny:smollm2", InferenceConfig())
    distillation = DistillationConfig(keep="all")
    env = StageEnv("eval", tmp_path / "eval", tmp_path / "rejected", None)
    store = PartStore(env.output_dir / "results/m/b", fingerprint(store_settings([teacher], distillation, job.dataset)))
    store.prepare()
    asked: list[int] = []

    def ids() -> list[tuple[str, bool]]:
        asked.append(1)
        return [("p1", True), ("p2", True)]

    def check():
        return stored_samples(job, env, [teacher], distillation, "results/m/b", ids)

    assert check() is None and asked == []  # an empty store is not done, and the source is not read for it

    def commit(problem: str, correct: bool) -> None:
        row = {"id": problem, "sample_id": f"{problem}-0", "teacher": teacher.name, "correct": correct, "kept": True,
               "format_reward": 1.0, "completion_tokens": 5}  # fmt: skip
        table = pa.Table.from_pylist([row], schema=schemas.SAMPLE)
        store.commit(table, [], [f"{teacher.name}|{problem}"], PartCounts(1, 1, 0, 1, 1), run_id="earlier")

    commit("p1", True)
    commit("other", False)  # as many answers as problems, but not to p2
    assert check() is None and asked == [1]
    commit("p2", False)
    run = check()
    assert run is not None and run.samples_dir == store.root and run.records_in == 3
    assert run.totals.reused_teacher_calls == 3 and run.totals.counts.teacher_calls == 3  # all from earlier runs
    assert run.stats["samples"] == 3
    other = model_teacher("tiny:smollm2?seed=1", InferenceConfig())  # other weights: its own answers to give
    assert stored_samples(job, env, [other], distillation, "results/m/b", ids) is None


def test_stored_samples_of_several_teachers_need_the_first_to_have_every_row_and_the_rest_the_usable_ones(tmp_path):
    """generate's first teacher commits every source row, a rejected record too; the other teachers only the usable
    rows (jobs/data/generate.py): the store is done when each teacher has committed its share, and not before."""
    from dataclasses import replace

    from distill_ray.config import DistillationConfig
    from distill_ray.data.part_store import PartCounts, PartStore, fingerprint
    from distill_ray.models.teachers import model_teacher
    from jobs.data.generate import store_settings, stored_samples

    job = build_config({"job_type": "generate", "output_dir": str(tmp_path)})
    first, second = (replace(model_teacher("tiny:smollm2", InferenceConfig()), name=n) for n in ("big", "small"))
    distillation = DistillationConfig(keep="all")
    env = StageEnv("generate", tmp_path / "generate", tmp_path / "rejected", None)
    settings = store_settings([first, second], distillation, job.dataset)
    store = PartStore(env.output_dir / "generations", fingerprint(settings))
    store.prepare()
    rows = [("p1", True), ("rejected:line 2", False)]

    def check():
        return stored_samples(job, env, [first, second], distillation, "generations", lambda: rows)

    def commit(*keys: str) -> None:
        store.commit(None, [], list(keys), PartCounts(len(keys), 0, len(keys), 0, 0), run_id="earlier")

    commit("big|p1", "small|p1")
    assert check() is None  # the first teacher's callers have not reached the rejected record yet
    commit("big|rejected:line 2")
    run = check()
    assert run is not None and run.records_in == 3  # small never reads the rejected record
    # the same teachers listed the other way round (their store's fingerprint does not depend on the order)
    assert stored_samples(job, env, [second, first], distillation, "generations", lambda: rows) is not None


def test_the_stored_check_leaves_parts_of_other_settings_alone(tmp_path):
    """A check made before deploying must lose nothing when it finds work left: the parts a run wrote under other
    settings (say, before a mistyped --set) are replaced only by a run that asks again (`open_store`)."""
    from distill_ray.config import DistillationConfig
    from distill_ray.data.part_store import PartCounts, PartStore, fingerprint
    from distill_ray.models.teachers import model_teacher
    from jobs.data.generate import store_settings, stored_samples

    job = build_config({"job_type": "generate", "output_dir": str(tmp_path)})
    teacher, distillation = model_teacher("tiny:smollm2", InferenceConfig()), DistillationConfig(keep="all")
    env = StageEnv("generate", tmp_path / "generate", tmp_path / "rejected", None)
    old = PartStore(env.output_dir / "generations", fingerprint(store_settings([teacher], DistillationConfig(),
                                                                                job.dataset)))  # fmt: skip
    old.prepare()
    old.commit(None, [], [f"{teacher.name}|p1"], PartCounts(1, 0, 1, 0, 1), run_id="earlier")
    manifests = sorted(old.manifest_dir.iterdir())
    assert stored_samples(job, env, [teacher], distillation, "generations", lambda: [("p1", True)]) is None
    assert sorted(old.manifest_dir.iterdir()) == manifests  # still there


@contextmanager
def watching_eval_apps():
    """While the block runs, look at Serve every 0.1 s; yields the list of looks, each {eval app: its deployments}."""
    from ray import serve

    looks: list[dict[str, frozenset]] = []
    stop = threading.Event()

    failed: list[BaseException] = []

    def watch() -> None:
        try:
            while not stop.is_set():
                apps = serve.status().applications
                looks.append({n: frozenset(a.deployments) for n, a in apps.items() if n.startswith("eval-")})
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            failed.append(exc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield looks
    finally:
        stop.set()
        watcher.join(timeout=10)
    if failed:
        raise failed[0]
    assert looks, "the watcher never looked at Serve"


def deployed(looks: list[dict[str, frozenset]]) -> dict[str, set]:
    """Eval app -> every deployment it had in any look."""
    seen: dict[str, set] = {}
    for look in looks:
        for name, deployments in look.items():
            seen.setdefault(name, set()).update(deployments)
    return seen


@pytest.mark.ray
def test_eval_deploys_one_app_for_both_models_then_only_new_models_in_waves(tmp_path, ray_cluster, serve_port, caplog):
    from ray import serve

    from jobs import eval as eval_job

    job = build_config({
        "job_type": "eval",
        "output_dir": str(tmp_path / "out"),
        # 1 caller x 1 row x 1 sample < 8 slots: the stage warns, once for both models and both benchmarks.
        "inference": {"max_new_tokens": 4, "concurrency": 1, "batch_size": 1, "serve": {"port": serve_port}},
        "evaluation": {
            "models": {"tiny_a": "tiny:smollm2", "tiny_b": "tiny:smollm2?seed=1"},
            "benchmarks": [{"name": "arith", "preset": "arithmetic", "limit": 2},
                           {"name": "arith2", "preset": "arithmetic", "limit": 1}],
            "batch_size": 1,  # as configured: eval would otherwise size its batches to fill the slots
        },
    })  # fmt: skip
    env = StageEnv("eval", tmp_path / "out", tmp_path / "out" / "rejected", ray_cluster)

    logger = logging.getLogger("jobs.data.generate")
    own = not logger.propagate  # once configured, the package loggers do not propagate (distill_ray/log.py)
    if own:
        logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="jobs.data.generate"), watching_eval_apps() as looks:
            result = eval_job.run(job, env)
    finally:
        if own:
            logger.removeHandler(caplog.handler)

    assert deployed(looks) == {"eval-eval": {"TeacherRouter", "TeacherDeployment-tiny_a", "TeacherDeployment-tiny_b"}}
    assert not [name for name in serve.status().applications if name.startswith("eval-")]  # deleted at the end
    assert result.rows_out == 2 * (2 + 1)
    assert result.metrics["models_asked"] == 2 and result.metrics["deploy_waves"] == 1
    for label in ("tiny_a", "tiny_b"):
        for bench, problems in (("arith", 2), ("arith2", 1)):
            assert pq.read_table(tmp_path / "out" / "results" / label / bench).num_rows == problems
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "engine slots" in r.getMessage()
    ]
    assert len(warnings) == 1 and warnings[0].startswith("eval: teacher "), warnings
    assert warnings[0].count("1 caller x 1 row x 1 temperature x 1 sample = 1 sequence in flight < 8") == 2

    # Three models more, at most two loaded at a time: only the new ones are deployed, in two apps one after the
    # other (an app of one model names its deployment without a label), and the stored answers of the first two are
    # read back untouched.
    stored = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "results").rglob("part-*.parquet")}
    more = dict(job.evaluation.models, tiny_c="tiny:smollm2?seed=2", tiny_d="tiny:smollm2?seed=3",
                tiny_e="tiny:smollm2?seed=4")  # fmt: skip
    update = {"models": more, "max_models_deployed": 2}
    job = job.model_copy(update={"evaluation": job.evaluation.model_copy(update=update)})
    with watching_eval_apps() as looks:
        again = eval_job.run(job, env)
    assert deployed(looks) == {"eval-eval": {"TeacherRouter", "TeacherDeployment-tiny_c", "TeacherDeployment-tiny_d",
                                             "TeacherDeployment"}}  # fmt: skip
    assert max(sum(d.startswith("TeacherDeployment") for d in look.get("eval-eval", ())) for look in looks) == 2
    assert again.metrics["models_asked"] == 3 and again.metrics["deploy_waves"] == 2
    assert again.metrics["teacher_calls"] == 3 * 3 and again.metrics["teacher_calls_reused"] == 2 * 3
    assert again.rows_out == 5 * 3 and list(again.metrics["results"]) == ["tiny_a", "tiny_b", "tiny_c", "tiny_d",
                                                                          "tiny_e"]  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in stored} == stored

    # Nothing left to ask: nothing is deployed, and the report is the same.
    with watching_eval_apps() as looks:
        last = eval_job.run(job, env)
    assert deployed(looks) == {} and last.rows_out == 5 * 3
    assert last.metrics["models_asked"] == last.metrics["deploy_waves"] == last.metrics["teacher_calls"] == 0
    assert last.metrics["results"] == again.metrics["results"]
