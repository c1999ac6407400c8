"""Per-stage accounting and `<output_dir>/summary.json`, the run's contract with its users.

Every stage reports rows in / out / rejected (with reasons) and seconds; `summary.json` is rewritten
after each stage, so a run that dies still leaves an honest record of what finished.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageResult:
    name: str
    job_type: str
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def count_rejects(self, reasons: list[str]) -> None:
        """Count rejects by kind: a reason's text before its first ':' ("malformed JSON"), so the summary has one
        entry per kind, not one per line; the details (which line, what it held) are in rejected/<stage>.jsonl."""
        counts = Counter(self.rejected_reasons)
        counts.update(reason.split(":")[0] for reason in reasons)
        self.rejected_reasons = dict(counts)
        self.rows_rejected = sum(counts.values())


@dataclass
class RunSummary:
    output_dir: str
    status: str = "running"
    stages: list[StageResult] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    error: str | None = None

    def add(self, result: StageResult) -> None:
        self.stages.append(result)
        self.write()

    def finish(self, status: str, error: str | None = None) -> None:
        self.status, self.error = status, error
        self.write()

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "seconds": round(time.time() - self.started_at, 2),
            "stages": [asdict(s) for s in self.stages],
        }

    def write(self) -> Path:
        path = Path(self.output_dir) / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        os.replace(tmp, path)
        return path
