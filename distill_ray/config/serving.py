"""The Ray Serve settings every service shares (teacher, reward): HTTP binding, batching, autoscaling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill_ray.config.section import Section

# Ray Serve's default `graceful_shutdown_wait_loop_s`, and ours (see the field). At Ray's, every deletion of a stage's
# services (each stage deletes its own when it ends) took about 3 s with nothing left to wait for.
RAY_SHUTDOWN_WAIT_S = 2.0
SHUTDOWN_WAIT_S = 0.2


class ServeConfig(Section):
    """A Ray Serve deployment (teacher or reward service): HTTP binding, batching and autoscaling. All apps share
    one Serve proxy per cluster, so host/port take effect for the first service started."""

    host: str = Field("127.0.0.1", description="HTTP bind address of Serve's proxy (loopback by default).")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port of Serve's proxy.")
    api_key: str | None = Field(None, description="If set, requests need 'Authorization: Bearer <api_key>'.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling upper bound.")
    target_ongoing_requests: float = Field(4, gt=0, description="Autoscaling target of in-flight requests per replica.")
    upscale_delay_s: float = Field(
        30.0, ge=0, description="Autoscaling: how long load must stay above target before replicas are added."
    )
    downscale_delay_s: float = Field(
        600.0, ge=0, description="Autoscaling: how long load must stay below target before replicas are removed."
    )
    look_back_period_s: float = Field(
        30.0, gt=0, description="Autoscaling: the window over which in-flight requests are averaged."
    )
    metrics_interval_s: float = Field(
        10.0, gt=0,
        description="Autoscaling: how often replicas and callers report load (Ray marks this field deprecated in "
        "favour of RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S, but in 2.60 it still sets the interval). "
        "Keep it below look_back_period_s.",
    )  # fmt: skip
    access_log: bool = Field(True, description="Log one line per request in each replica (Serve's access log).")
    max_ongoing_requests: int = Field(32, ge=1, description="Hard cap of in-flight requests per replica.")
    max_batch_size: int = Field(8, ge=1, description="Sequences decoded (teacher) or items scored (reward models) together in one batch; with `scheduling: continuous`, the teacher's slots: sequences decoding at once. On a CPU a step of 64 rows costs about twice one of 16 (docs/engines.md, 'How many slots'): the quickstart uses 64, with twice that in flight.")
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="How long a batch waits to fill up (static batches and scoring; continuous scheduling never waits).")
    scheduling: Literal["continuous", "static"] = Field(
        "continuous",
        description="How the teacher's transformers engine batches: `continuous` = a sequence joins the running "
        "batch as soon as a slot is free and leaves when it ends, and the samples of one prompt share its prefill "
        "(distill_ray/models/continuous.py); `static` = Serve's batch queue forms a batch that runs until its "
        "longest sequence ends. Models with sliding-window or non-standard caches fall back to static.",
    )
    num_cpus: float = Field(0.5, gt=0, description="CPU share reserved per replica (fractional on small boxes).")
    num_gpus: float = Field(0, ge=0, description="GPU share reserved per replica (Ray sets CUDA_VISIBLE_DEVICES).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the teacher's engine runs: `auto` = cuda when the replica sees a GPU."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="The teacher engine's weights: `auto` = bfloat16 on cuda, float32 on cpu."
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per replica (default: Ray's).")
    graceful_shutdown_wait_loop_s: float = Field(
        SHUTDOWN_WAIT_S, gt=0,
        description="Seconds a stopping replica waits before it counts the requests it still runs, and between counts; "
        "it stops once none are left, or after Serve's graceful_shutdown_timeout_s (Ray Serve's option of this name, "
        f"default {RAY_SHUTDOWN_WAIT_S} s in Ray). Ours is short: after draining, the replica rejects what still "
        "reaches it, and the caller's Serve router retries that request on another replica, so no request is lost "
        "by not waiting longer.",
    )

    @model_validator(mode="after")
    def _window_spans_reports(self):
        if self.look_back_period_s <= self.metrics_interval_s:
            raise ValueError("look_back_period_s must be longer than metrics_interval_s")
        return self

    def autoscaling_config(self) -> dict:
        """Ray Serve's `autoscaling_config` for a deployment with these settings. It starts with one replica
        even when allowed to scale to zero, so a deploy returns a live URL."""
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "initial_replicas": self.min_replicas or 1,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "look_back_period_s": self.look_back_period_s,
            # Set only when changed: Ray warns about the deprecated field whenever it differs from its default.
            **({"metrics_interval_s": self.metrics_interval_s} if self.metrics_interval_s != 10.0 else {}),
        }

    def deployment_options(self) -> dict:
        """`.options(...)` every deployment of an app gets from these settings: autoscaling, request cap,
        CPU share, access log and shutdown wait."""
        return {
            "autoscaling_config": self.autoscaling_config(),
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus} | ({"num_gpus": self.num_gpus} if self.num_gpus else {}),
            "logging_config": {"enable_access_log": self.access_log},
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
        }
