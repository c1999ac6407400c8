"""distill_ray/training/checkpoints.py `prune_checkpoints` (training.save_total_limit): which step folders go."""

from __future__ import annotations

import json

import pytest

from distill_ray.training.checkpoints import STATE_FILE, latest_checkpoint, prune_checkpoints


def _checkpoint(root, step, complete=True):
    folder = root / f"step_{step}"
    folder.mkdir(parents=True)
    (folder / "optimizer.pt").write_bytes(b"x" * 10)
    if complete:
        (folder / STATE_FILE).write_text(json.dumps({"step": step}))
    return folder


def test_keeps_the_newest_by_step_number_not_by_name(tmp_path):
    for step in (2, 4, 10, 20):  # by name step_10 < step_2 < step_20 < step_4: the numeric order must decide
        _checkpoint(tmp_path, step)
    deleted = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in deleted] == ["step_2", "step_4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_10", "step_20"]
    assert latest_checkpoint(tmp_path).name == "step_20"  # what a resume starts from stays
    assert prune_checkpoints(tmp_path, 2) == []  # at the limit: nothing more


def test_leaves_saves_in_progress_and_incomplete_folders_alone(tmp_path):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 6, complete=False)  # no state file: not a checkpoint a resume would use
    (tmp_path / ".tmp-step_8-abc").mkdir()  # a save under way
    assert [p.name for p in prune_checkpoints(tmp_path, 1)] == ["step_2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-step_8-abc", "step_4", "step_6"]


def test_refuses_to_keep_none_and_tolerates_a_missing_folder(tmp_path):
    _checkpoint(tmp_path, 2)
    with pytest.raises(ValueError, match="at least 1"):
        prune_checkpoints(tmp_path, 0)
    assert (tmp_path / "step_2").is_dir()
    assert prune_checkpoints(tmp_path / "absent", 1) == []


def test_the_config_key_refuses_zero():
    from distill_ray.config import build_config
    from distill_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="save_total_limit"):
        build_config({"job_type": "sft", "dataset": {"labeled_path": "x.parquet"},
                      "training": {"save_total_limit": 0}})  # fmt: skip
    assert build_config({"job_type": "sft", "dataset": {"labeled_path": "x.parquet"}}).training.save_total_limit is None
