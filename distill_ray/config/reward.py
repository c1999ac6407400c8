"""Config of the reward service (`distill-ray serve reward`, and what the `grpo` job scores rollouts with).

The reward of one response (METHODS.md section 1, DistilQwen's GRPO with distilled reward models):

    R = w_format * R_fmt + w_accuracy * R_acc + lambda_rv * R_RV + lambda_cd * R_CD
    R_RV = -|f_RV - clip(f_RV, L_RV, H_RV)|   (zero inside the interval, linear outside; same for CD)

where f_RV, f_CD in [0, 1] are the distilled RV / CD reward models' outputs (`rm` job), R_fmt the format
score and R_acc the rule-based verifier's verdict (1 correct, 0 otherwise). `setting` picks which RM terms
count: `vanilla` (format + accuracy), `rv`, `cd` or `rv_cd`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill_ray.config.section import Section
from distill_ray.config.serving import ServeConfig

RewardSetting = Literal["vanilla", "rv", "cd", "rv_cd"]
SETTING_TERMS: dict[str, tuple[str, ...]] = {"vanilla": (), "rv": ("rv",), "cd": ("cd",), "rv_cd": ("rv", "cd")}


class RewardServeConfig(ServeConfig):
    """Serve settings of the reward app's deployments: as the teacher's, with defaults for small scorers."""

    num_cpus: float = Field(0.25, gt=0, description="CPU share reserved per replica of each deployment.")
    max_batch_size: int = Field(16, ge=1, description="Items a reward model scores in one forward pass.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="How long a reward-model batch waits to fill up.")
    target_ongoing_requests: float = Field(8, gt=0, description="Autoscaling target of in-flight requests per replica.")


class RewardConfig(Section):
    """The reward service: RV / CD reward models, the rule-based verifier and the format scorer, composed
    into one Serve app at `/reward` (`POST /v1/rewards`, OpenRLHF's `POST /get_reward`, `GET /health`)."""

    url: str | None = Field(
        None,
        description="Base URL of an already running reward service (e.g. http://127.0.0.1:8000/reward); "
        "None: the grpo job deploys one from this section and removes it when done.",
    )
    rv_model: str | None = Field(None, description="Folder of the RV reward model (an `rm` job's `model/`).")
    cd_model: str | None = Field(None, description="Folder of the CD reward model (an `rm` job's `model/`).")
    setting: RewardSetting = Field(
        "vanilla",
        description="Which reward-model terms count: `vanilla` (format + accuracy), `rv`, `cd`, `rv_cd`. A "
        "/v1/rewards request may name its own; /get_reward uses this one.",
    )
    rv_interval: tuple[float, float] = Field(
        (0.333, 0.556), description="[L_RV, H_RV] in [0, 1]; default: RV 3-5 of 0-9 (ThoughtX's filter)."
    )
    cd_interval: tuple[float, float] = Field(
        (0.444, 0.556), description="[L_CD, H_CD] in [0, 1]; default: CD 4-5 of 0-9."
    )
    lambda_rv: float = Field(1.0, ge=0, description="Weight of the RV interval penalty.")
    lambda_cd: float = Field(1.0, ge=0, description="Weight of the CD interval penalty.")
    w_format: float = Field(1.0, ge=0, description="Weight of the format score R_fmt.")
    w_accuracy: float = Field(1.0, ge=0, description="Weight of the verifier's R_acc (1 correct, 0 not).")
    format: Literal["think_answer", "boxed"] = Field(
        "think_answer",
        description="Format score: `think_answer` needs <think>..</think><answer>\\boxed{..}</answer>; "
        "`boxed` needs a \\boxed{} answer anywhere.",
    )
    think_opened: bool | None = Field(
        None,
        description="Whether the policy's chat template writes `<think>` at the start of the assistant turn "
        "(DeepSeek-R1 distills, QwQ, Qwen3 thinking mode), so a response holds only the closing `</think>`: the "
        "format score and the verifier then read `<think>` + response. None: decided per item from its prompt "
        "(opened when the prompt ends with `<think>`); a /v1/rewards item's own `think_opened` wins over both.",
    )
    verify_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Deadline of one item's answer check, counted from when a verifier worker starts it; an item "
        "that runs over counts as not verified and only its worker is replaced. Each math-verify call inside "
        "gets a third of it (signal.alarm rounds up to whole seconds).",
    )
    verifier_processes: int = Field(1, ge=1, description="Worker processes per verifier replica (math-verify).")
    max_items: int = Field(512, ge=1, description="Most items one request may carry (larger ones get a 413).")
    request_timeout_s: float = Field(120, gt=0, description="Client side: timeout of one reward request.")
    serve: RewardServeConfig = Field(
        default_factory=RewardServeConfig,
        description="Replicas, autoscaling and batching of each deployment of the app (reward models, "
        "verifier); api_key, when set, is enforced by the service and sent by the grpo job.",
    )

    @model_validator(mode="after")
    def _intervals(self):
        for name in ("rv_interval", "cd_interval"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high <= 1.0:
                raise ValueError(f"{name} must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
        missing = [t for t in self.terms() if getattr(self, f"{t}_model") is None]
        if missing and self.url is None:
            raise ValueError(f"setting '{self.setting}' needs {missing[0]}_model (a reward model folder)")
        return self

    def check_model_folders(self) -> None:
        """Raise ConfigError naming the key of a reward model that is not a model folder. Called before a
        deploy, where the error reaches the user, rather than in a replica that would crash-loop."""
        from pathlib import Path

        from distill_ray.errors import ConfigError

        for key in ("rv_model", "cd_model"):
            folder = getattr(self, key)
            if folder and not (Path(folder) / "config.json").is_file():
                raise ConfigError(f"reward.{key}", f"'{folder}' is not a reward model folder (an rm job's model/)")

    def terms(self, setting: str | None = None) -> tuple[str, ...]:
        """The reward-model terms of `setting` (default: this section's)."""
        return SETTING_TERMS[setting or self.setting]
