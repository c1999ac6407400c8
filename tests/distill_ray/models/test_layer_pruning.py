"""Layer-pruned students (`?layers=N&keep_last=K`): the right layers are kept, and a bad spec is one clear error."""

import pytest
import torch

from distill_ray.errors import ConfigError
from distill_ray.models.loading import _prune_layers, load_causal_lm, resolve_model


def test_keep_last_keeps_the_first_and_the_last_layers_and_still_generates(tmp_path):
    src = resolve_model("tiny:smollm2?layers=4")
    _prune_layers(src, 3, tmp_path / "pruned", keep_last=1)
    full, pruned = load_causal_lm(src), load_causal_lm(tmp_path / "pruned")
    assert pruned.config.num_hidden_layers == 3
    kept = [0, 1, 3]  # the first two, then the last
    for index, source_index in enumerate(kept):
        got = pruned.model.layers[index].mlp.down_proj.weight
        assert torch.equal(got, full.model.layers[source_index].mlp.down_proj.weight), (index, source_index)
    ids = torch.tensor([[1, 2, 3]])
    out = pruned.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
    assert out.shape == (1, 7)  # the reloaded model's KV cache has one entry per kept layer


@pytest.mark.parametrize("spec, words", [
    ("builtin:smollm2-135m-instruct?keep_last=2", "needs layers"),
    ("builtin:smollm2-135m-instruct?layers=2&keep_last=3", "exceeds layers"),
    ("builtin:smollm2-135m-instruct?layers=2&drop=1", "unknown builtin-model parameter 'drop'"),
])  # fmt: skip
def test_bad_pruning_specs_name_the_problem(spec, words):
    with pytest.raises(ConfigError, match=words):
        resolve_model(spec, key="models.student")
