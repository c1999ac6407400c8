"""The Ray Serve settings every service shares (teacher, reward): HTTP binding, batching, autoscaling."""

from __future__ import annotations

from pydantic import Field

from distill_ray.config.section import Section


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
    max_ongoing_requests: int = Field(32, ge=1, description="Hard cap of in-flight requests per replica.")
    max_batch_size: int = Field(8, ge=1, description="Sequences decoded (teacher) or items scored (reward models) together in one batch.")
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="How long a batch waits to fill up.")
    num_cpus: float = Field(0.5, gt=0, description="CPU share reserved per replica (fractional on small boxes).")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per replica (default: Ray's).")

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
        }
