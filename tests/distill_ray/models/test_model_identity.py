"""model_identity: the name of a model's weights in resumable stages' fingerprints (no Ray, no model load)."""

import os
import shutil

from distill_ray.models.loading import model_identity


def _folder(root, weights=b"\x00" * 64):
    root.mkdir()
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(weights)
    return root


def test_named_specs_and_remote_ids_are_their_own_identity(tmp_path):
    for spec in ("builtin:smollm2-135m-instruct?layers=28&keep_last=2", "tiny:smollm2", "gpt-4o-mini",
                 str(tmp_path / "not-there")):  # fmt: skip
        assert model_identity(spec) == spec


def test_a_folder_is_named_by_its_bytes_not_its_path(tmp_path):
    folder = _folder(tmp_path / "model")
    first = model_identity(str(folder))
    assert first.startswith("folder@") and model_identity(str(folder)) == first

    # the same weights exported again (new modification time): the same identity, stored parts still hold
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    os.utime(folder / "model.safetensors", ns=(1, 1))
    assert model_identity(str(folder)) == first

    # trained again in place: same path, same size, other bytes -> another identity
    (folder / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 63)
    retrained = model_identity(str(folder))
    assert retrained != first and retrained.startswith("folder@")

    # a copy elsewhere (a run folder moved, or copied to branch an ablation off it) is the same model
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert model_identity(str(copy)) == retrained

    # a file added to the folder (a tokenizer file, say) counts too
    (folder / "tokenizer.json").write_text("{}")
    assert model_identity(str(folder)) not in (first, retrained)
