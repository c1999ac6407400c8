"""What every job entrypoint receives, and the contract it follows.

A job module exposes `run(job: JobConfig, stage: StageEnv) -> StageResult`. It writes its outputs
under `stage.output_dir`, writes rejected rows (with reasons) to `stage.rejected_file` through
`distill_ray/rejects.py`, and returns counts; the runner times it and writes summary.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.embedded import RayContext

# CPU share of Ray Data's light tasks (reads, parsing, filters, writes). Ray's default of 1 CPU per task
# deadlocks a 2-core box once teacher replicas and caller pools hold their (fractional) shares.
LIGHT_CPUS = 0.25
LIGHT = {"num_cpus": LIGHT_CPUS}


@dataclass(frozen=True)
class StageEnv:
    name: str
    output_dir: Path  # this stage's own folder
    rejected_dir: Path  # the run's <output_dir>/rejected/
    ray: RayContext

    @property
    def run_dir(self) -> Path:
        """The run's folder (`<output_dir>`): a single job's own folder, or the one above a pipeline's stages."""
        return self.rejected_dir.parent

    @property
    def rejected_file(self) -> Path:
        return self.rejected_dir / f"{self.name}.jsonl"
