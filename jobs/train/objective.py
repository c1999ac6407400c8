"""What differs between the trainer jobs: the `Objective` a job hands to the shared Ray Train loop.

Where it sits: a trainer job (`jobs/train/sft.py`, `kd.py`, ...) builds its Objective on the driver from plain
data (model spec, prompts, its typed config section); `jobs/train/loop.py` pickles it to every worker, where
`setup_worker` loads what the objective needs beyond the trained model (a frozen reference, a reward client)
and the loop calls `dataset` / `collate` / `units` / `loss` each micro-batch. The loss contract (a SUM over
the micro-batch's units divided by the optimizer step's `denom`) is the normalisation note in the loop's
module docstring; the loss functions themselves come from `distill_ray.losses.get_loss`.
"""

from __future__ import annotations

from pathlib import Path

from distill_ray.config import TrainingConfig


class Objective:
    """How one trainer job turns rows into losses. Built on the driver from plain data and pickled to
    the workers, so it holds no model or tokenizer until `setup_worker` runs there."""

    job_type = "sft"
    unit = "tokens"  # what the loss is averaged over (metrics report <unit>_per_second); an instance may set its own
    metric_names: tuple[str, ...] = ()  # extra per-step metrics, averaged over units like the loss
    # training.lora: what peft adapts (`distill_ray/training/lora.py`): a causal LM, or rm's sequence classifier
    # (SEQ_CLS: its new score head trains in full beside the adapters).
    peft_task_type = "CAUSAL_LM"
    reads_output_weight = False  # the loss uses the output layer's weight itself (kd), so no adapter may sit there

    def __init__(self, model_spec: str, system_prompt: str | None, user_template: str, training: TrainingConfig):
        self.model_spec, self.system_prompt, self.user_template = model_spec, system_prompt, user_template
        self.max_length = training.max_length
        self.batch_size = training.per_device_train_batch_size

    def start_path(self) -> Path:
        from distill_ray.models.loading import resolve_model

        return resolve_model(self.model_spec, "models.student")

    def load_tokenizer(self):
        from distill_ray.models.loading import load_tokenizer

        return load_tokenizer(self.start_path())

    def load_model(self, path: Path):
        from distill_ray.models.loading import load_causal_lm

        return load_causal_lm(path)

    def read_rows(self, rows_path: str):
        import pyarrow.parquet as pq

        return pq.read_table(rows_path).to_pylist()

    def dataset(self, rows, tokenizer):
        raise NotImplementedError

    def collate(self, examples: list, tokenizer) -> dict:
        raise NotImplementedError

    def setup_worker(self, device) -> None:
        """Per-worker state beyond the trained model (e.g. a frozen reference model, placed with `place_frozen`)."""

    frozen_config: dict | None = None  # set by the loop under ZeRO-3: frozen models are partitioned like the student

    def place_frozen(self, model, device):
        """A frozen model (no gradients, eval mode) on `device`, or partitioned by a ZeRO-3 engine when the student
        is (`distill_ray/training/zero.py`)."""
        model.requires_grad_(False)
        if self.frozen_config is not None:
            from distill_ray.training.zero import frozen

            return frozen(model, self.frozen_config)
        return model.to(device).eval()

    def units(self, batch: dict) -> float:
        raise NotImplementedError

    def tokens(self, batch: dict) -> int:
        """Tokens the model read for this micro-batch (non-padding inputs), asked right after its `loss`: the
        trackers' `train/tokens_per_s` counts these, whatever the objective's unit."""
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else 0

    def loss(self, model, batch: dict, denom: float):
        """(sum of the micro-batch's per-unit losses / denom, {metric: mean over its units})."""
        raise NotImplementedError

    def annotate(self, model_dir: Path) -> None:
        """Extra files written into every saved model folder (checkpoints and the final model)."""

    eval_steps = 0  # > 0: rank 0 calls `evaluate` before the first step, every eval_steps steps and at the end

    def evaluate(self, model) -> dict[str, float]:
        """Metrics of the model being trained (e.g. GRPO's greedy reward on held-out prompts)."""
        return {}
