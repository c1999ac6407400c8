"""The cluster manifests (cluster/kuberay/*.yaml, cluster/launcher.yaml) and the Serve app builders they name.

Checked here, without Kubernetes and without starting Ray (asserted after every test): every YAML under
cluster/ parses; the fields KubeRay, Serve and the cluster launcher read are there and agree with the code
(Ray version of the images, import paths, deployment names, config keys, recipes, volumes, secrets); and
Ray's own validators accept them (Serve config schema, autoscaling config, runtime_env, launcher JSON
schema). Whether the pods start, pull, autoscale and serve is only known on a real cluster (docs/cluster.md).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import tomllib
import yaml
from conftest import REPO  # noqa: E402 - the repository root, wherever this file sits
from ray.runtime_env import RuntimeEnv

CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
RAY_MINOR = ".".join(ray.__version__.split(".")[:2])
RAY_KINDS = {"RayCluster", "RayService", "RayJob"}
EXPECTED_KINDS = {
    "raycluster.yaml": {"RayCluster", "PersistentVolumeClaim"},
    "rayservice-teacher.yaml": {"RayService"},
    "rayservice-reward.yaml": {"RayService"},
    "rayjob-recipe.yaml": {"RayJob"},
    "rayjob-sft-7b.yaml": {"RayJob"},
}
# rayproject/ray:<ray version>[-py<XY>][-gpu|-cpu|-cu<NNN>]
IMAGE = re.compile(r"^rayproject/ray:(?P<version>\d+\.\d+\.\d+)(?:-(?P<py>py\d+))?(?:-(?P<platform>gpu|cpu|cu\d+))?$")
API_KEY_SECRET = "distill-ray-api-key"


# ---- helpers -----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_ray_started():
    # In the full suite another test's session cluster may already be up; then there is nothing to check.
    before = ray.is_initialized()
    yield
    if not before:
        assert not ray.is_initialized(), "a test started Ray; these checks must stay offline"


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifest(name: str, kind: str) -> dict:
    docs = [d for d in load_docs(KUBERAY / name) if d.get("kind") == kind]
    assert len(docs) == 1, f"{name}: expected one {kind}, found {len(docs)}"
    return docs[0]


def cluster_specs() -> list[tuple[str, dict]]:
    """Every RayClusterSpec in the manifests: RayCluster.spec, RayService.rayClusterConfig, RayJob.rayClusterSpec."""
    out = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in load_docs(path):
            spec = doc.get("spec", {})
            inner = {"RayCluster": spec, "RayService": spec.get("rayClusterConfig"),
                     "RayJob": spec.get("rayClusterSpec")}.get(doc.get("kind"))  # fmt: skip
            if inner is not None:
                out.append((f"{path.name}:{doc['kind']}", inner))
    return out


def pod_specs(cluster_spec: dict) -> list[tuple[str, dict]]:
    pods = [("head", cluster_spec["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in cluster_spec.get("workerGroupSpecs", [])]
    return pods


def ray_container(pod: dict) -> dict:
    return pod["containers"][0]  # KubeRay's convention: the Ray container comes first


def gpu_limit(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def serve_config(name: str) -> dict:
    text = manifest(name, "RayService")["spec"]["serveConfigV2"]
    assert isinstance(text, str), "serveConfigV2 must be a YAML string (a block scalar), not a mapping"
    cfg = yaml.safe_load(text)
    assert isinstance(cfg, dict)
    return cfg


def source_deployment_names(path: Path) -> set[str]:
    """Deployment names a module can produce: `@serve.deployment(name=...)` (or the class name) and
    `.options(name=...)` renames, including f-strings over a `for x in (...)` loop of constants."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) for t in node.targets if isinstance(t, ast.Name)}  # fmt: skip
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for dec in node.decorator_list:
                func = dec.func if isinstance(dec, ast.Call) else dec
                if ast.unparse(func) in ("serve.deployment", "deployment"):
                    kw = {k.arg: k.value for k in getattr(dec, "keywords", [])}
                    if "name" not in kw:
                        names.add(node.name)
                    elif isinstance(kw["name"], ast.Name):
                        names.add(constants[kw["name"].id])
                    else:
                        names.add(ast.literal_eval(kw["name"]))
    loops = {}  # loop variable -> the constant values it takes
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            try:
                loops[node.target.id] = list(ast.literal_eval(node.iter))
            except ValueError:
                pass
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "options":
            for kw in node.keywords:
                if kw.arg != "name":
                    continue
                if isinstance(kw.value, ast.Constant):
                    names.add(kw.value.value)
                elif isinstance(kw.value, ast.JoinedStr):
                    names.update(_expand_fstring(kw.value, loops))
    return names


def _expand_fstring(node: ast.JoinedStr, loops: dict[str, list]) -> set[str]:
    results = [""]
    for part in node.values:
        if isinstance(part, ast.Constant):
            results = [r + part.value for r in results]
        elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) and part.value.id in loops:
            results = [r + str(v) for r in results for v in loops[part.value.id]]
        else:
            return set()  # not expandable statically; the built-app test covers it
    return set(results)


def mounted(pod: dict, path: str) -> bool:
    return any(path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
               for m in ray_container(pod).get("volumeMounts", []))  # fmt: skip


def env_from_secret(container: dict, var: str) -> dict | None:
    for env in container.get("env", []):
        if env.get("name") == var:
            return env.get("valueFrom", {}).get("secretKeyRef")
    return None


# ---- every file ---------------------------------------------------------------------------------------


def test_every_yaml_under_cluster_parses_and_has_the_expected_kinds():
    files = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yml"))
    names = {p.name for p in files}
    assert set(EXPECTED_KINDS) | {"launcher.yaml"} <= names
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), path
        if path.parent != KUBERAY:
            continue
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: a document without apiVersion/kind"
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"
            if doc["kind"] in RAY_KINDS:
                assert doc["apiVersion"] == "ray.io/v1", f"{path.name}: {doc['apiVersion']}"
        assert path.name in EXPECTED_KINDS, f"{path.name}: new manifest; add its kinds to EXPECTED_KINDS"
        assert {d["kind"] for d in docs} == EXPECTED_KINDS[path.name], path.name


SPECS = cluster_specs()
SPEC_IDS = [where for where, _ in SPECS]


@pytest.mark.parametrize(("where", "spec"), SPECS, ids=SPEC_IDS)
def test_cluster_spec_images_match_installed_ray(where, spec):
    assert ".".join(str(spec["rayVersion"]).split(".")[:2]) == RAY_MINOR, f"{where}: rayVersion {spec['rayVersion']}"
    pythons = set()
    for group, pod in pod_specs(spec):
        for c in pod["containers"] + pod.get("initContainers", []):
            m = IMAGE.match(c["image"])
            assert m, f"{where}/{group}: image {c['image']!r} is not a rayproject/ray:<version> tag"
            assert m["version"] == str(spec["rayVersion"]), f"{where}/{group}: {c['image']} vs rayVersion"
            pythons.add(m["py"])
            if gpu_limit(c):
                assert m["platform"] and m["platform"] != "cpu", f"{where}/{group}: GPU pod on a CPU image"
    assert len(pythons) == 1 and None not in pythons, f"{where}: one explicit Python tag for all images: {pythons}"


@pytest.mark.parametrize(("where", "spec"), SPECS, ids=SPEC_IDS)
def test_cluster_spec_autoscaling_groups_and_exposure(where, spec):
    assert spec.get("enableInTreeAutoscaling") is True, where
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0", f"{where}: the head must advertise no CPUs"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: head Service must stay ClusterIP"
    assert not head.get("enableIngress"), where
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: Ray token auth off"
    ports = {p["name"]: p["containerPort"] for p in ray_container(head["template"]["spec"]).get("ports", [])}
    assert ports.get("dashboard") == 8265, where
    for group in spec["workerGroupSpecs"]:
        lo, hi = group["minReplicas"], group["maxReplicas"]
        assert 0 <= lo <= group.get("replicas", lo) <= hi and hi >= 1, f"{where}/{group['groupName']}"
        for c in group["template"]["spec"]["containers"]:
            res = c.get("resources", {})
            # Kubernetes rejects extended resources whose request differs from the limit.
            if "nvidia.com/gpu" in res.get("requests", {}):
                assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]


def test_raycluster_has_head_and_an_autoscaled_gpu_group():
    spec = manifest("raycluster.yaml", "RayCluster")["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if any(gpu_limit(c) >= 1 for c in g["template"]["spec"]["containers"])]  # fmt: skip
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    assert any(g["maxReplicas"] > g["minReplicas"] for g in gpu_groups), "GPU group cannot scale"
    head = ray_container(spec["headGroupSpec"]["template"]["spec"])
    head_ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert head_ports.get("serve") == 8000  # port-forwarded for `distill-ray serve` (docs/cluster.md)


def test_volumes_mounts_and_secrets_are_consistent():
    pvcs = {d["metadata"]["name"] for d in load_docs(KUBERAY / "raycluster.yaml")
            if d["kind"] == "PersistentVolumeClaim"}  # fmt: skip
    docs_text = (REPO / "docs" / "cluster.md").read_text()
    for where, spec in cluster_specs():
        for group, pod in pod_specs(spec):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod["containers"] + pod.get("initContainers", []):
                for m in c.get("volumeMounts", []):
                    assert m["name"] in volumes, f"{where}/{group}: mount of undeclared volume {m['name']}"
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] == API_KEY_SECRET, f"{where}/{group}: secret {ref['name']}"
                        assert f"create secret generic {ref['name']}" in docs_text, "docs must say how to create it"
            for v in volumes.values():
                claim = v.get("persistentVolumeClaim", {}).get("claimName")
                if claim:
                    assert claim in pvcs, f"{where}/{group}: claim {claim} is not defined in raycluster.yaml"
            # What an init container pip-installs (--target) must be mounted in, and importable by, Ray.
            env = {e["name"]: e.get("value", "") for e in ray_container(pod).get("env", [])}
            for ic in pod.get("initContainers", []):
                for target in [a.split("=", 1)[1] for a in ic.get("command", []) if a.startswith("--target=")]:
                    assert mounted(pod, target), f"{where}/{group}: {target} is not mounted in the Ray container"
                    assert target in env.get("PYTHONPATH", "").split(":"), f"{where}/{group}: {target} off PYTHONPATH"


# ---- RayServices --------------------------------------------------------------------------------------

SERVICES = [
    ("rayservice-teacher.yaml", "teacher", "/teacher", REPO / "serve" / "teacher.py", "recipes/quickstart.yaml",
     {"TeacherDeployment"}),
    ("rayservice-reward.yaml", "reward", "/reward", REPO / "serve" / "reward.py", "recipes/rm_grpo.yaml",
     {"RewardService", "RewardModel-rv", "RewardModel-cd", "Verifier"}),
]  # fmt: skip
SERVICE_FIELDS = ("file", "builder", "prefix", "source", "recipe", "names")


@pytest.mark.parametrize(SERVICE_FIELDS, SERVICES, ids=["teacher", "reward"])
def test_rayservice_serve_config(file, builder, prefix, source, recipe, names, monkeypatch):
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from distill_ray.config import load_config
    from serve.apps import parse_overrides

    cfg = serve_config(file)
    ServeDeploySchema.model_validate(cfg)  # Serve's own schema for config files
    (app,) = cfg["applications"]
    assert app["route_prefix"] == prefix

    module_name, _, attr = app["import_path"].partition(":")
    assert (module_name, attr) == ("serve.apps", builder)
    fn = getattr(importlib.import_module(module_name), attr)
    assert inspect.isfunction(fn) and len(inspect.signature(fn).parameters) == 1  # what Serve requires of builders

    available = source_deployment_names(source)
    listed = {d["name"] for d in app["deployments"]}
    assert listed == names, f"{file}: deployments {listed}"
    assert listed <= available, f"{file}: {listed - available} not declared in {source.name} ({available})"
    for d in app["deployments"]:
        auto = d.get("autoscaling_config")
        assert auto, f"{d['name']}: no autoscaling_config"
        assert "num_replicas" not in d, f"{d['name']}: num_replicas and autoscaling_config exclude each other"
        assert 0 <= auto["min_replicas"] <= auto["max_replicas"] and auto["max_replicas"] >= 1, d["name"]
        assert auto["min_replicas"] <= auto.get("initial_replicas", auto["min_replicas"]) <= auto["max_replicas"]
        AutoscalingConfig(**auto)  # Serve's validation of the same fields

    args = app["args"]
    assert args["config"] == recipe and (REPO / recipe).is_file()
    monkeypatch.chdir(REPO)  # on the cluster, relative paths resolve in the working_dir (this repo)
    load_config(args["config"], parse_overrides(args.get("set")))  # every override names a real config key

    env = app["runtime_env"]
    RuntimeEnv(**env)  # Ray's runtime_env validation (URI forms, pip spec)
    assert env["working_dir"].endswith(".zip")
    assert any(str(p).replace(" ", "").startswith("distill-ray@") for p in env["pip"]), "pip must install distill-ray"

    rs = manifest(file, "RayService")["spec"]["rayClusterConfig"]
    head = ray_container(rs["headGroupSpec"]["template"]["spec"])
    serve_port = {p["name"]: p["containerPort"] for p in head["ports"]}.get("serve")
    assert serve_port == cfg.get("http_options", {}).get("port", 8000), "KubeRay needs a `serve` port on the head"
    var = args.get("api_key_env")
    assert var, f"{file}: the service must take its API key from a Secret-backed env var"
    for group, pod in pod_specs(rs):
        ref = env_from_secret(ray_container(pod), var)
        assert ref and ref["name"] == API_KEY_SECRET, f"{file}/{group}: {var} not set from the Secret"
        assert not ref.get("optional"), f"{file}/{group}: the key must be required, not optional"


def test_reward_service_models_verifier_and_volume_agree(monkeypatch):
    from distill_ray.config import load_config
    from serve.apps import parse_overrides

    app = serve_config("rayservice-reward.yaml")["applications"][0]
    monkeypatch.chdir(REPO)
    cfg = load_config(app["args"]["config"], parse_overrides(app["args"]["set"]))
    reward = cfg.stages[0].job.reward  # the stage serve.apps uses by default
    deployments = {d["name"]: d for d in app["deployments"]}
    rs = manifest("rayservice-reward.yaml", "RayService")["spec"]["rayClusterConfig"]
    for kind in ("rv", "cd"):
        folder = getattr(reward, f"{kind}_model")
        assert f"RewardModel-{kind}" in deployments and folder, f"RewardModel-{kind} is configured but no model"
        for group, pod in pod_specs(rs):  # the builder checks the folder wherever it runs
            assert mounted(pod, folder), f"{group}: {folder} is not on a mounted volume"
    verifier_cpus = deployments["Verifier"]["ray_actor_options"]["num_cpus"]
    assert verifier_cpus >= reward.verifier_processes, "Verifier replicas need a CPU per worker process"


@pytest.mark.parametrize(SERVICE_FIELDS, SERVICES, ids=["teacher", "reward"])
def test_manifest_args_build_exactly_the_listed_deployments(file, builder, prefix, source, recipe, names,
                                                            monkeypatch, tmp_path):  # fmt: skip
    """Build each app from its manifest's own args (no Ray) and compare Serve's deployment list."""
    try:
        from ray.serve._private.build_app import build_app
    except ImportError:  # private API; the source-name check above still runs
        pytest.skip("ray.serve._private.build_app moved")
    import serve.apps

    app_cfg = serve_config(file)["applications"][0]
    args = dict(app_cfg["args"])
    if builder == "reward":  # stand-ins for the trained models on the cluster volume
        for kind in ("rv", "cd"):
            (tmp_path / kind).mkdir()
            (tmp_path / kind / "config.json").write_text("{}")
        args["set"] = [*args["set"], f"reward.rv_model={tmp_path / 'rv'}", f"reward.cd_model={tmp_path / 'cd'}"]
    monkeypatch.setenv(args["api_key_env"], "test-key")
    monkeypatch.chdir(REPO)
    application = getattr(serve.apps, builder)(args)
    built = build_app(application, name=app_cfg["name"])
    # The teacher's router is its fixed, CPU-free ingress: the manifest tunes only the deployment that decodes.
    assert {d.name for d in built.deployments} - {"TeacherRouter"} == names


# ---- RayJob -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file", ["rayjob-recipe.yaml", "rayjob-sft-7b.yaml"])
def test_rayjob_runs_a_recipe_with_distill_ray_run(monkeypatch, file):
    from cluster.embedded import state_paths
    from distill_ray.config import load_config
    from jobs.cli import _parser

    job = manifest(file, "RayJob")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["distill-ray", "run"], job["entrypoint"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "distill-ray" in scripts, "the entrypoint's console script must exist"

    parsed = _parser().parse_args(argv[1:])
    assert parsed.command == "run"
    config = REPO / parsed.config
    assert config.is_file() and config.parent == REPO / "recipes", parsed.config
    monkeypatch.chdir(REPO)
    cfg = load_config(parsed.config, parsed.overrides)  # overrides name real keys and validate

    if "rayClusterSpec" in job:
        assert job.get("shutdownAfterJobFinishes") is True, "an ephemeral cluster must go away after the job"
        head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        _, storage = state_paths(cfg.ray)  # also enforces the state_dir length limit
        for path in (cfg.output_dir, str(storage)):
            assert mounted(head, path), f"{path} would be lost with the cluster: not on a mounted volume"
    else:
        assert job.get("clusterSelector", {}).get("ray.io/cluster"), "neither rayClusterSpec nor clusterSelector"

    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    RuntimeEnv(**runtime_env)
    assert runtime_env["working_dir"].endswith(".zip")
    assert any(str(p).replace(" ", "").startswith("distill-ray@") for p in runtime_env["pip"])
    t = getattr(cfg, "training", None)  # a pipeline's stages have their own
    if t is not None and t.use_gpu:  # the job's cluster has a GPU for every Ray Train worker, and what its strategy imports
        gpus = sum(gpu_limit(c) * g["maxReplicas"] for g in job["rayClusterSpec"]["workerGroupSpecs"]
                   for c in g["template"]["spec"]["containers"])  # fmt: skip
        assert gpus >= t.num_workers, f"{file}: {gpus} GPUs for {t.num_workers} workers"
        if t.strategy == "deepspeed":
            assert any(str(p).startswith("deepspeed") for p in runtime_env["pip"]), file


# ---- cluster launcher ---------------------------------------------------------------------------------


def test_launcher_config_validates_and_has_head_and_gpu_workers():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((CLUSTER / "launcher.yaml").read_text())
    validate_config(prepare_config(cfg))  # Ray's JSON schema for cluster configs, after its defaults
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpu = [k for k, v in workers.items() if v.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu, "no worker node type with a GPU"
    assert cfg["max_workers"] >= 1 and cfg["max_workers"] >= sum(v.get("min_workers", 0) for v in workers.values())
    for name, v in workers.items():
        assert 0 <= v.get("min_workers", 0) <= v["max_workers"], name
    m = IMAGE.match(cfg["docker"]["image"])
    assert m and ".".join(m["version"].split(".")[:2]) == RAY_MINOR, cfg["docker"]["image"]
    assert any("distill-ray" in c for c in cfg["setup_commands"]), "setup_commands must install distill-ray"
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start


def test_launcher_validator_is_not_vacuous():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((CLUSTER / "launcher.yaml").read_text())
    cfg["max_workers_typo"] = 3
    with pytest.raises(Exception, match="max_workers_typo"):
        validate_config(prepare_config(cfg))


# ---- serve.apps builders ------------------------------------------------------------------------------


def test_builders_require_config():
    import serve.apps

    for builder in (serve.apps.teacher, serve.apps.reward):
        with pytest.raises(ValueError, match="'config'"):
            builder({})
        with pytest.raises(ValueError, match="'config'"):
            builder({"set": ["inference.max_new_tokens=8"]})


def test_builders_reject_unknown_args():
    import serve.apps

    with pytest.raises(ValueError, match="'cfg'"):
        serve.apps.teacher({"cfg": "recipes/quickstart.yaml"})


def test_teacher_builder_returns_an_application_without_starting_ray():
    # A fresh interpreter, so the check holds even when the suite has a Ray cluster up.
    code = (
        "import ray, serve.apps\n"
        "from ray.serve import Application\n"
        "app = serve.apps.teacher({'config': 'recipes/quickstart.yaml'})\n"
        "assert isinstance(app, Application), type(app)\n"
        "assert not ray.is_initialized(), 'building the app started Ray'\n"
        "print('built', type(app).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built Application" in result.stdout


def test_ray_accepts_the_builders_as_application_builders():
    try:
        from ray.serve._private.api import call_user_app_builder_with_args_if_necessary as call_builder
    except ImportError:
        pytest.skip("ray.serve._private.api moved")
    from ray.serve import Application

    import serve.apps

    app = call_builder(serve.apps.teacher, {"config": str(REPO / "recipes/quickstart.yaml")})
    assert isinstance(app, Application)


def test_parse_overrides_forms():
    from serve.apps import parse_overrides

    assert parse_overrides(None) == [] and parse_overrides("") == []
    assert parse_overrides(["a.b=1", "c=2"]) == ["a.b=1", "c=2"]
    assert parse_overrides("inference.temperature=[0.6, 1.0],inference.seed=3") == [
        "inference.temperature=[0.6, 1.0]", "inference.seed=3"]  # fmt: skip
    with pytest.raises(ValueError, match="'set'"):
        parse_overrides("no-equals-sign")
    with pytest.raises(ValueError, match="'set'"):
        parse_overrides({"a": 1})


def test_teacher_builder_applies_overrides_and_api_key_env(monkeypatch):
    import serve.apps
    import serve.teacher

    seen = {}
    monkeypatch.setattr(serve.teacher, "build_teachers_app",
                        lambda teachers, api_key: seen.update(teachers=teachers, api_key=api_key) or "app")  # fmt: skip
    config = str(REPO / "recipes/quickstart.yaml")
    args = {"config": config, "set": "inference.serve.max_replicas=3,inference.model_name=t", "api_key_env": "DR_KEY"}

    monkeypatch.delenv("DR_KEY", raising=False)
    with pytest.raises(ValueError, match="api_key_env"):  # fail closed, never an open service
        serve.apps.teacher(args)
    monkeypatch.setenv("DR_KEY", "s3cret")
    assert serve.apps.teacher(args) == "app"
    (teacher,) = seen["teachers"]
    assert teacher.spec == "builtin:smollm2-135m-instruct" and teacher.served_name == "t"
    assert teacher.inference.serve.max_replicas == 3 and seen["api_key"] == "s3cret"

    serve.apps.teacher({"config": config})
    assert seen["api_key"] is None and seen["teachers"][0].inference.serve.max_replicas == 1

    # `serve run serve.apps:teacher config=... set=a=1,b=2` splits each arg at its first `=` only.
    try:
        from ray.serve.scripts import convert_args_to_dict
    except ImportError:
        return
    cli_args = convert_args_to_dict((f"config={config}", "set=inference.serve.max_replicas=2,inference.model_name=u"))
    serve.apps.teacher(cli_args)
    assert seen["teachers"][0].inference.serve.max_replicas == 2 and seen["teachers"][0].served_name == "u"


def test_reward_builder_checks_model_folders_and_picks_stages(monkeypatch, tmp_path):
    import serve.apps
    import serve.reward
    from distill_ray.errors import ConfigError

    seen = {}
    monkeypatch.setattr(serve.reward, "build_reward_app", lambda cfg: seen.update(cfg=cfg) or "app")
    config = str(REPO / "recipes/rm_grpo.yaml")
    missing = {"config": config, "set": [f"reward.rv_model={tmp_path / 'nope'}", f"reward.cd_model={tmp_path}"]}
    with pytest.raises(ConfigError, match="reward.rv_model"):
        serve.apps.reward(missing)

    for kind in ("rv", "cd"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "config.json").write_text("{}")
    ok = [f"reward.rv_model={tmp_path / 'rv'}", f"reward.cd_model={tmp_path / 'cd'}"]
    assert serve.apps.reward({"config": config, "set": ok}) == "app"
    assert seen["cfg"].setting == "vanilla"  # first stage (generate) has the top-level reward section
    serve.apps.reward({"config": config, "set": ok, "stage": "grpo_rv_cd"})
    assert seen["cfg"].setting == "rv_cd" and seen["cfg"].rv_model == str(tmp_path / "rv")
    with pytest.raises(ValueError, match="'stage'"):
        serve.apps.reward({"config": config, "set": ok, "stage": "nope"})
