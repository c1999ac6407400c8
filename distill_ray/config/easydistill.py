"""EasyDistill's config keys that live elsewhere here, and those that have no place here.

Our section and key names follow EasyDistill's (its README's sample config, github.com/modelscope/easydistill)
so its users' configs port with few edits: `dataset.instruction_path` / `labeled_path` / `seed`,
`inference.temperature` / `max_new_tokens` / `seed` and the HF TrainingArguments names under `training` are ours
too. Its users also write vLLM engine arguments straight under `inference`; here those belong to the vLLM
engine's own section, `inference.vllm`, and `InferenceConfig` moves them there (`move_vllm_keys`), so they
take effect with `inference.engine: vllm`. Keys with no meaning here are refused like any unknown key, with a
hint saying what to do instead (`NO_PLACE_HERE`).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

# inference.<key> -> its place under inference.vllm: a VLLMConfig field, or an entry of its engine_kwargs
# (vLLM engine arguments with no field of their own).
VLLM_KEYS_UNDER_INFERENCE: dict[str, tuple[str, ...]] = {
    "gpu_memory_utilization": ("gpu_memory_utilization",),
    "max_model_len": ("max_model_len",),
    "enforce_eager": ("enforce_eager",),
    "trust_remote_code": ("engine_kwargs", "trust_remote_code"),
    "enable_chunked_prefill": ("engine_kwargs", "enable_chunked_prefill"),
}

# EasyDistill keys (in its README's sample config) with no meaning here -> what to do instead.
NO_PLACE_HERE: dict[str, str] = {
    "dataset.template": "chat templates come from each model's tokenizer, not from a template file",
    "training.output_dir": "use the top-level output_dir, under which a trainer writes its model to model/",
}


def move_vllm_keys(inference: dict[str, Any]) -> dict[str, Any]:
    """`inference` (a raw section mapping) with EasyDistill's vLLM keys moved to their place under `vllm`.

    Returns a new mapping; the input is left as it was. A key set both here and at its place under `vllm` must
    agree (ValueError naming both otherwise). When `vllm` or its `engine_kwargs` is not a mapping, nothing
    moves, and validation reports that value.
    """
    present = [key for key in VLLM_KEYS_UNDER_INFERENCE if key in inference]
    if not present:
        return inference
    vllm = inference.get("vllm", {})
    vllm = vllm.model_dump(exclude_unset=True) if isinstance(vllm, BaseModel) else copy.deepcopy(vllm)
    if not isinstance(vllm, dict):
        return inference
    for key in present:
        *parents, leaf = VLLM_KEYS_UNDER_INFERENCE[key]
        node = vllm
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                return inference
        if leaf in node and node[leaf] != inference[key]:
            where = ".".join(VLLM_KEYS_UNDER_INFERENCE[key])
            raise ValueError(
                f"inference.{key} ({inference[key]!r}) and inference.vllm.{where} ({node[leaf]!r}) differ "
                "(set only one of them)"
            )
        node[leaf] = inference[key]
    moved = {k: v for k, v in inference.items() if k not in VLLM_KEYS_UNDER_INFERENCE}
    return {**moved, "vllm": vllm}
