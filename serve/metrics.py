"""The teacher's own Prometheus metrics, next to the ones Ray Serve exports for every deployment.

Ray exports application metrics through each node's metrics agent (`/metrics` on the node's metrics export
port) and prefixes their names with `ray_`, so `distill_ray_teacher_batch_size` is scraped as
`ray_distill_ray_teacher_batch_size`. docs/metrics.md lists these together with Serve's request, latency,
queue and replica metrics; tests/serve/test_metrics.py scrapes every name it documents.
"""

from __future__ import annotations

from ray.util import metrics

BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


class TeacherMetrics:
    """Counters one teacher replica updates per engine batch, tagged with the served model name."""

    def __init__(self, model: str):
        self.tags = {"model": model}
        self.batch_size = metrics.Histogram(
            "distill_ray_teacher_batch_size",
            description="Sequences decoded together in one engine batch.",
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("model",),
        )
        self.sequences = metrics.Counter(
            "distill_ray_teacher_sequences", description="Sequences decoded (one per choice).", tag_keys=("model",)
        )
        self.completion_tokens = metrics.Counter(
            "distill_ray_teacher_completion_tokens", description="Tokens generated.", tag_keys=("model",)
        )
        self.engine_seconds = metrics.Histogram(
            "distill_ray_teacher_engine_seconds",
            description="Wall time of one engine batch.",
            boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
            tag_keys=("model",),
        )

    def record_batch(self, sequences: int, completion_tokens: int, seconds: float) -> None:
        self.batch_size.observe(sequences, tags=self.tags)
        self.sequences.inc(sequences, tags=self.tags)
        if completion_tokens:
            self.completion_tokens.inc(completion_tokens, tags=self.tags)
        self.engine_seconds.observe(seconds, tags=self.tags)
