"""Config schemas and loading. See `schema.py` for every key and its meaning."""

from distill_ray.config.loader import apply_overrides, build_config, load_config, read_config_file
from distill_ray.config.schema import (
    DEFAULT_TEACHER,
    BenchmarkConfig,
    DatasetConfig,
    DistillationConfig,
    EvaluationConfig,
    InferenceConfig,
    JobConfig,
    ModelsConfig,
    PipelineConfig,
    RayConfig,
    ServeConfig,
    Stage,
    TrainingConfig,
)

__all__ = [
    "DEFAULT_TEACHER",
    "BenchmarkConfig",
    "DatasetConfig",
    "DistillationConfig",
    "EvaluationConfig",
    "InferenceConfig",
    "JobConfig",
    "ModelsConfig",
    "PipelineConfig",
    "RayConfig",
    "ServeConfig",
    "Stage",
    "TrainingConfig",
    "apply_overrides",
    "build_config",
    "load_config",
    "read_config_file",
]
