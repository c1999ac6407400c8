"""LoRA through peft: the one place a trainer's student gets its adapters, is checked, resumed and merged.

Where it sits: `jobs/train/loop.py` builds every trainer's model (sft, kd, advdistill, dpo, rm, grpo, opd) with
`attach` when `training.lora` is set, so the objectives never see the difference: a `PeftModel` forwards,
generates and exposes the student's own methods. Before Ray Train starts, the loop's driver side calls
`check_target_modules` (every `target_modules` name must match a layer LoRA can adapt, on an empty copy of the
student built on the meta device, so no weights are read) and `check_resume` (a checkpoint's adapter must have
been trained with the same settings): both raise ConfigError (exit 2) naming the key.

Saving (`distill_ray/training/checkpoints.py`, rank 0): a LoRA checkpoint holds `adapter/` (peft's
adapter_config.json + adapter_model.safetensors, with the tokenizer) instead of the full `model/`, next to the
optimizer state of the adapter parameters; resume loads the student from its start spec and the adapter on top.
At the end the adapter goes to `<stage>/adapter/` and `merge` folds it into the student's weights for
`<stage>/model/`, a plain HF folder the teacher service, the reward service and eval load unchanged.
"""

from __future__ import annotations

from pathlib import Path

from distill_ray.config.training import ALL_LINEAR, LoRAConfig
from distill_ray.errors import ConfigError

ADAPTER = "adapter"  # the adapter folder's name, in a checkpoint and in the stage folder
KEY = "training.lora"
# What the objectives train: a causal LM (every trainer but rm) or rm's one-output sequence classifier, whose
# new score head peft trains in full alongside the adapters (`modules_to_save`).
TASK_TYPES = ("CAUSAL_LM", "SEQ_CLS")


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def peft_config(cfg: LoRAConfig, task_type: str):
    from peft import LoraConfig

    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type {task_type!r} is not one of {TASK_TYPES}")
    targets = cfg.target_modules if cfg.target_modules == ALL_LINEAR else list(cfg.target_modules)
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      task_type=task_type)  # fmt: skip


def attach(model, cfg: LoRAConfig, task_type: str, seed: int, adapter_dir: Path | None = None):
    """`model` with trainable adapters (its own weights frozen): fresh ones, or those saved in `adapter_dir`.

    Fresh adapters start at zero update (B = 0) with A drawn from `seed`, the same on every worker."""
    import torch
    from peft import PeftModel, get_peft_model

    if adapter_dir is not None:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, peft_config(cfg, task_type))


def merge(model):
    """The student with the adapters folded into its weights (a plain transformers model). Merges IN PLACE: the
    PeftModel is spent afterwards, so this is the last thing done with it."""
    return model.merge_and_unload()


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ----------------------------------------------------------------------------- driver-side checks


def check_target_modules(cfg: LoRAConfig, model_dir: Path, task_type: str, output_weight_read: bool = False) -> None:
    """Every `target_modules` name matches at least one layer LoRA can adapt in the model at `model_dir`.

    `output_weight_read`: the objective reads the output layer's weight itself (kd's chunked loss), so an adapter
    there would be silently skipped: refused."""
    modules, output = _skeleton_modules(model_dir, task_type)
    adaptable = {name for name, kind in modules.items() if kind}
    key = f"{KEY}.target_modules"
    if cfg.target_modules == ALL_LINEAR:
        if not any(kind == "linear" for kind in modules.values()):
            raise ConfigError(key, f"models.student has no linear layer for '{ALL_LINEAR}'; name its layers")
        return
    suffixes = sorted({name.rsplit(".", 1)[-1] for name in adaptable})
    for target in cfg.target_modules:
        hits = [name for name in modules if name == target or name.endswith("." + target)]
        if not hits:
            raise ConfigError(key, f"'{target}' matches no layer of models.student; its adaptable layers are named "
                              f"{', '.join(suffixes)}")  # fmt: skip
        if not any(h in adaptable for h in hits):
            raise ConfigError(key, f"'{target}' names no linear, embedding or convolution layer (e.g. {hits[0]}); "
                              f"LoRA adapts only those: {', '.join(suffixes)}")  # fmt: skip
        if output_weight_read and output in hits:
            raise ConfigError(key, f"'{target}' is the output layer, whose weight this objective reads directly "
                              "(the adapter would be skipped); leave it out")  # fmt: skip


def _skeleton_modules(model_dir: Path, task_type: str) -> tuple[dict[str, str | None], str | None]:
    """({module path: 'linear' | 'embedding' | 'conv' | None}, the output layer's path) of the student built empty
    (on the meta device: no weights are read or allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(model_dir)
    auto = AutoModelForCausalLM
    if task_type == "SEQ_CLS":
        config.num_labels, auto = 1, AutoModelForSequenceClassification
    with torch.device("meta"):
        model = auto.from_config(config)
    kinds = ((torch.nn.Linear, "linear"), (Conv1D, "linear"), (torch.nn.Embedding, "embedding"),
             (torch.nn.Conv1d, "conv"), (torch.nn.Conv2d, "conv"), (torch.nn.Conv3d, "conv"))  # fmt: skip
    out: dict[str, str | None] = {}
    for name, module in model.named_modules():
        if name:
            out[name] = next((kind for cls, kind in kinds if isinstance(module, cls)), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return out, next((n for n, m in model.named_modules() if head is not None and m is head), None)


def check_resume(cfg: LoRAConfig | None, saved: dict | None, checkpoint: Path) -> None:
    """A checkpoint resumes only with the LoRA settings it was trained with (`saved`: its trainer state's `lora`,
    None for full fine-tuning)."""
    where = f"checkpoint {checkpoint.name} in {checkpoint.parent}"
    if cfg is None and saved is None:
        return
    if cfg is None:
        raise ConfigError(KEY, f"{where} holds a LoRA adapter: set training.lora as it was ({saved}) to resume, "
                          "or use a new output_dir")  # fmt: skip
    if saved is None:
        raise ConfigError(KEY, f"{where} holds fully fine-tuned weights; remove training.lora to resume it, or use a "
                          "new output_dir")  # fmt: skip
    current = cfg.model_dump(mode="json")
    for name, value in current.items():
        if saved.get(name) != value:
            raise ConfigError(f"{KEY}.{name}", f"{where} was trained with {name}={saved.get(name)!r}; resume with the "
                              "same value or use a new output_dir")  # fmt: skip
