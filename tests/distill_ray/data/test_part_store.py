"""The resumable part store: atomic commits, orphan cleanup, stale parts, reuse accounting."""

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from distill_ray.data.part_store import PartCounts, PartStore, export_rejected


def _commit(store, keys, run_id, calls=2, reject=None):
    table = pa.table({"k": keys})
    rejects = [{"reason": reject, "key": "bad", "row": {"x": 1}}] if reject else []
    counts = PartCounts(rows_in=len(keys) + len(rejects), rows_out=len(keys), rows_rejected=len(rejects),
                        records_written=len(keys), teacher_calls=calls,
                        reasons=Counter([reject.split(":")[0]] if reject else []))
    return store.commit(table, rejects, keys + (["bad"] if reject else []), counts, run_id)


def test_committed_parts_are_done_and_counted_with_reuse(tmp_path):
    store = PartStore(tmp_path / "out", "fp1")
    store.prepare()
    _commit(store, ["a", "b"], "run1", reject="malformed JSON: x")
    _commit(store, ["c"], "run2")
    assert store.done_keys() == {"a", "b", "c", "bad"}
    totals = store.totals("run2")
    assert (totals.counts.rows_in, totals.counts.rows_out, totals.counts.rows_rejected) == (4, 3, 1)
    assert totals.reused_parts == 1 and totals.reused_teacher_calls == 2 and totals.reused_rows == 3
    assert pq.read_table(tmp_path / "out").num_rows == 3  # manifests and rejects are not read as data
    rejected = tmp_path / "rejected" / "s.jsonl"
    assert export_rejected([store], rejected, "s") == 1
    line = '{"stage": "s", "reason": "malformed JSON: x", "key": "bad", "row": {"x": 1}}\n'
    assert rejected.read_text() == line
    assert export_rejected([store], rejected, "s") == 1 and rejected.read_text() == line  # replaced, not appended


def test_orphans_and_stale_parts_are_removed_before_resuming(tmp_path):
    store = PartStore(tmp_path / "out", "fp1")
    store.prepare()
    name = _commit(store, ["a"], "run1")
    (tmp_path / "out" / "part-orphan.parquet").write_bytes(b"half written")
    (tmp_path / "out" / ".tmp-part-x.parquet.partial").write_bytes(b"")
    assert store.prepare() == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.parquet")) == [f"{name}.parquet"]
    assert not list((tmp_path / "out").glob(".tmp-*"))

    changed = PartStore(tmp_path / "out", "fp2")  # other settings: the old part is stale
    assert changed.prepare() == 0 and changed.done_keys() == set()
    assert not list((tmp_path / "out").glob("*.parquet"))
