"""Resumable stage output: a folder of atomically committed Parquet parts, each with a manifest.

Where it sits: every data stage that calls a teacher (generate, judge, rewrite, synthesize) writes
through a `PartStore`. A Ray Data worker processes one batch of input rows and commits it as one
part: `part-<id>.parquet` (the output rows) plus `_manifests/part-<id>.json` (the input keys it
covered, its counts and rejection reasons) and `_rejected/part-<id>.jsonl` (rejected rows with
reasons). Files are written under temp names (`.tmp-*.partial`, which no reader lists) and renamed; the manifest is renamed last and is the
commit mark. So after a SIGKILL at any point:
- a part with a manifest is complete, and its input keys are never processed again;
- a part without one is an orphan, deleted by `clean_orphans()` before work resumes.
Teacher calls are the expensive part, so each manifest records how many it made and in which run:
the stage summary reports calls made now and calls reused from earlier runs.

A `fingerprint` of the settings that shape the output (model, prompts, sampling) is stored in each
manifest; parts written under another fingerprint are stale and `prepare()` removes them.
Pure Python + pyarrow (no Ray): the same store is used by workers and the driver.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distill_ray.rejects import replace_rejects

MANIFESTS = "_manifests"
REJECTED = "_rejected"


def fingerprint(payload: Any) -> str:
    """A short stable digest of the settings that decide a stage's output."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class PartCounts:
    """What one part (or, summed, a whole stage) did, in the stage's input units."""

    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    records_written: int = 0  # output rows; more than rows_out when a stage expands (samples per problem)
    teacher_calls: int = 0
    reasons: Counter = field(default_factory=Counter)

    def add(self, other: PartCounts) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.rows_rejected += other.rows_rejected
        self.records_written += other.records_written
        self.teacher_calls += other.teacher_calls
        self.reasons.update(other.reasons)


@dataclass
class StoreTotals:
    """All committed parts of a stage, split into this run's work and what earlier runs left."""

    counts: PartCounts
    parts: int
    reused_parts: int
    reused_rows: int
    reused_teacher_calls: int


class PartStore:
    def __init__(self, root: str | Path, fingerprint: str):
        self.root = Path(root)
        self.fingerprint = fingerprint

    @property
    def manifest_dir(self) -> Path:
        return self.root / MANIFESTS

    @property
    def rejected_dir(self) -> Path:
        return self.root / REJECTED

    # ------------------------------------------------------------------ driver side, before work

    def prepare(self) -> int:
        """Create the folders, drop stale parts (other fingerprint) and orphans; return parts kept."""
        self.manifest_dir.mkdir(parents=True, exist_ok=True)
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        for manifest in self._manifest_files():
            if _read_json(manifest).get("fingerprint") != self.fingerprint:
                manifest.unlink(missing_ok=True)
        self.clean_orphans()
        return len(self._manifest_files())

    def clean_orphans(self) -> None:
        """Delete temp files and data files whose manifest never landed (a kill mid-commit)."""
        committed = {p.stem for p in self._manifest_files()}
        for folder, pattern in ((self.root, "*.parquet"), (self.rejected_dir, "*.jsonl")):
            for path in folder.glob(pattern):
                if path.stem not in committed:
                    path.unlink(missing_ok=True)
        for folder in (self.root, self.rejected_dir, self.manifest_dir):
            for tmp in folder.glob(".tmp-*"):
                tmp.unlink(missing_ok=True)

    def done_keys(self) -> set[str]:
        keys: set[str] = set()
        for manifest in self._manifest_files():
            keys.update(_read_json(manifest)["keys"])
        return keys

    def committed_keys(self) -> set[str]:
        """The keys of the parts committed under this store's fingerprint, read without changing anything: unlike
        `prepare` + `done_keys`, parts of other settings stay, for a check made before a run that may not happen."""
        keys: set[str] = set()
        for manifest in self._manifest_files():
            m = _read_json(manifest)
            if m.get("fingerprint") == self.fingerprint:
                keys.update(m["keys"])
        return keys

    # ------------------------------------------------------------------ worker side

    def commit(self, table: pa.Table | None, rejects: list[dict[str, Any]], keys: list[str],
               counts: PartCounts, run_id: str) -> str:
        """Write one part atomically (data, rejects, then the manifest that marks it done)."""
        name = f"part-{uuid.uuid4().hex[:16]}"
        staged: list[tuple[Path, Path]] = []
        if table is not None and table.num_rows:
            tmp = self.root / f".tmp-{name}.parquet.partial"
            pq.write_table(table, tmp)
            staged.append((tmp, self.root / f"{name}.parquet"))
        if rejects:
            tmp = self.rejected_dir / f".tmp-{name}.jsonl.partial"
            tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rejects))
            staged.append((tmp, self.rejected_dir / f"{name}.jsonl"))
        for tmp, final in staged:
            os.replace(tmp, final)
        manifest = {
            "fingerprint": self.fingerprint, "run_id": run_id, "keys": keys,
            "rows_in": counts.rows_in, "rows_out": counts.rows_out, "rows_rejected": counts.rows_rejected,
            "records_written": counts.records_written, "teacher_calls": counts.teacher_calls,
            "reasons": dict(counts.reasons),
        }  # fmt: skip
        tmp = self.manifest_dir / f".tmp-{name}.json.partial"
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, self.manifest_dir / f"{name}.json")  # the commit point
        return name

    # ------------------------------------------------------------------ driver side, after work

    def totals(self, run_id: str) -> StoreTotals:
        counts, reused = PartCounts(), PartCounts()
        parts = reused_parts = 0
        for manifest in self._manifest_files():
            m = _read_json(manifest)
            part = PartCounts(m["rows_in"], m["rows_out"], m["rows_rejected"], m["records_written"],
                              m["teacher_calls"], Counter(m["reasons"]))  # fmt: skip
            counts.add(part)
            parts += 1
            if m["run_id"] != run_id:
                reused.add(part)
                reused_parts += 1
        return StoreTotals(counts, parts, reused_parts, reused.rows_in, reused.teacher_calls)

    def ensure_readable(self, schema: pa.Schema) -> None:
        """Ray Data writes nothing for an empty result; leave a schema-only part so readers still work."""
        if not any(self.root.glob("part-*.parquet")) and not (self.root / "empty.parquet").exists():
            pq.write_table(schema.empty_table(), self.root / "empty.parquet")

    def _manifest_files(self) -> list[Path]:
        return sorted(self.manifest_dir.glob("part-*.json")) if self.manifest_dir.is_dir() else []


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def export_rejected(stores: list[PartStore], path: Path, stage: str) -> int:
    """Rewrite `rejected/<stage>.jsonl` from the stores' committed rejects; return the row count.

    Replaced whole (`distill_ray/rejects.py`), so a resumed run lists every committed part's rejects once.
    """

    def committed_rejects():
        for store in stores:
            for part in sorted(store.rejected_dir.glob("part-*.jsonl")):
                with part.open() as fh:
                    yield from (json.loads(line) for line in fh)

    return replace_rejects(path, stage, committed_rejects())
