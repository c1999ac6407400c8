"""Config loading: overrides, interpolation, strict keys, and every shipped recipe validates."""


import pytest
from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits

from distill_ray.config import JobConfig, PipelineConfig, apply_overrides, build_config, load_config
from distill_ray.errors import ConfigError, InputFileError


def test_single_job_defaults_and_easydistill_keys():
    cfg = build_config({"job_type": "generate", "dataset": {"instruction_path": "x.jsonl"},
                        "inference": {"max_new_tokens": 64, "temperature": 0.8},
                        "training": {"num_train_epochs": 2}})  # fmt: skip
    assert isinstance(cfg, JobConfig)
    assert cfg.inference.max_new_tokens == 64 and cfg.inference.temperatures == [0.8]
    assert cfg.training.num_train_epochs == 2
    assert cfg.inference.serve.host == "127.0.0.1"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "sft", "training": {"learning_rte": 1e-4}})
    assert err.value.key == "training.learning_rte"
    assert "unknown key" in str(err.value)


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "sft", "training": {"learning_rate": -1}})
    assert err.value.key == "training.learning_rate" and "-1" in str(err.value)


def test_missing_job_type():
    with pytest.raises(ConfigError) as err:
        build_config({"dataset": {}})
    assert err.value.key == "job_type"


def test_overrides_parse_yaml_scalars_and_stage_names():
    raw = {"job_type": "pipeline", "stages": [{"name": "gen", "job_type": "generate"}]}
    out = apply_overrides(raw, ["inference.temperature=[0.6, 1.0]", "stages.gen.dataset.limit=3",
                                "stages.0.inference.seed=5", "output_dir=/tmp/x"])  # fmt: skip
    assert out["inference"]["temperature"] == [0.6, 1.0]
    assert out["stages"][0]["dataset"]["limit"] == 3 and out["stages"][0]["inference"]["seed"] == 5
    assert out["output_dir"] == "/tmp/x"
    assert "inference" not in raw  # the input mapping is not mutated
    with pytest.raises(ConfigError):
        apply_overrides(raw, ["stages.nope.dataset.limit=3"])
    with pytest.raises(ConfigError):
        apply_overrides(raw, ["no_equals_sign"])


def test_pipeline_merges_defaults_and_interpolates_output_dir():
    cfg = build_config({
        "job_type": "pipeline", "output_dir": "/tmp/run1",
        "inference": {"max_new_tokens": 32, "seed": 3},
        "stages": [
            {"name": "gen", "job_type": "generate", "inference": {"max_new_tokens": 8}},
            {"name": "sft", "job_type": "sft", "dataset": {"labeled_path": "{output_dir}/gen/kept"}},
        ],
    })  # fmt: skip
    assert isinstance(cfg, PipelineConfig)
    gen, sft = (s.job for s in cfg.stages)
    assert gen.inference.max_new_tokens == 8 and gen.inference.seed == 3  # stage wins, defaults kept
    assert sft.inference.max_new_tokens == 32
    assert sft.dataset.labeled_path == "/tmp/run1/gen/kept"
    assert gen.output_dir == "/tmp/run1/gen"


def test_pipeline_stage_errors_are_prefixed():
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "pipeline", "stages": [{"name": "a", "job_type": "generate"},
                                                          {"name": "b", "job_type": "train"}]})  # fmt: skip
    assert err.value.key.startswith("stages.b.job_type")
    with pytest.raises(ConfigError) as err:
        build_config({"job_type": "pipeline", "stages": [{"name": "a", "job_type": "sft"},
                                                          {"name": "a", "job_type": "sft"}]})  # fmt: skip
    assert "unique" in str(err.value)


def test_yaml_and_json_files(tmp_path):
    (tmp_path / "c.json").write_text('{"job_type": "eval", "evaluation": {"num_samples": 4}}')
    assert load_config(tmp_path / "c.json").evaluation.num_samples == 4
    (tmp_path / "bad.yaml").write_text("job_type: [\n")
    with pytest.raises(InputFileError) as err:
        load_config(tmp_path / "bad.yaml")
    assert "bad.yaml" in str(err.value)


# recipes/ and its subfolders (recipes/gpu/: the cluster-only recipes with the papers' settings), each id its
# path under recipes/ since a GPU recipe may share a CPU recipe's file name.
@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").rglob("*.yaml")),
                         ids=lambda p: p.relative_to(REPO / "recipes").as_posix())
def test_every_recipe_validates(recipe):
    from jobs.runner import preflight

    cfg = load_config(recipe)
    preflight(cfg)


def test_gpu_recipes_run_only_on_a_cluster():
    # Their models and data are paths on the cluster's shared volume: `run` here must refuse them at once.
    recipes = sorted((REPO / "recipes" / "gpu").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        cfg = load_config(recipe)
        assert cfg.ray.cluster_only, recipe.name
        assert cfg.output_dir.startswith("/mnt/distill/"), recipe.name


@pytest.mark.parametrize("body, key", [
    ("job_type: generate\ndataset: {instruction_path: 'procedural:arithmetic?max_operand=9&split=test', limit: 43}\n",
     "dataset.limit"),
    ("job_type: eval\nevaluation:\n  models: {m: 'tiny:smollm2'}\n"
     "  benchmarks: [{name: arith, preset: arithmetic, limit: 377}]\n", "evaluation.benchmarks.arith.limit"),
])  # fmt: skip
def test_preflight_refuses_more_procedural_problems_than_a_split_holds(tmp_path, body, key):
    from distill_ray.errors import ConfigError
    from jobs.runner import preflight

    path = tmp_path / "job.yaml"
    path.write_text(f"output_dir: {tmp_path / 'out'}\nmodels: {{student: 'tiny:smollm2'}}\n" + body)
    with pytest.raises(ConfigError) as refused:
        preflight(load_config(path))
    assert refused.value.key == key and "has only" in str(refused.value)


def test_services_stop_after_a_short_shutdown_wait_unless_set():
    """Every deployment's replicas count their running requests after 0.2 s when stopping, not Ray's 2 s; a set
    value is passed through, a non-positive one is refused with its key."""
    from distill_ray.config.serving import RAY_SHUTDOWN_WAIT_S, SHUTDOWN_WAIT_S

    def options(**serve):
        cfg = build_config({"job_type": "generate", "dataset": {"instruction_path": "x.jsonl"},
                            "inference": {"serve": serve}})  # fmt: skip
        return cfg.inference.serve.deployment_options()

    assert SHUTDOWN_WAIT_S < RAY_SHUTDOWN_WAIT_S
    assert options()["graceful_shutdown_wait_loop_s"] == SHUTDOWN_WAIT_S
    assert options(max_replicas=3, graceful_shutdown_wait_loop_s=1.5)["graceful_shutdown_wait_loop_s"] == 1.5
    with pytest.raises(ConfigError) as err:
        options(graceful_shutdown_wait_loop_s=0)
    assert err.value.key == "inference.serve.graceful_shutdown_wait_loop_s"
