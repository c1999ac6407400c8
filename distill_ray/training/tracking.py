"""Experiment trackers (`training.report_to`): TensorBoard, Weights & Biases and MLflow, through their own libraries.

Where it sits: `jobs/train/loop.py` opens one `Trackers` on rank 0 of every trainer (the other ranks never import
these libraries) and logs to it from its one metrics path: every `logging_steps` steps the same names in every
trainer, `train/loss`, `train/lr`, `train/grad_norm`, `train/tokens_per_s` and the objective's own metrics as
`train/<name>`, plus evaluations as `eval/<name>` (grpo, opd). Nothing is opened, written or sent when
`report_to` is empty.

Where each writes, by default under the run folder (the job's output_dir, which holds every stage of a pipeline):

- `tensorboard`: `torch.utils.tensorboard.SummaryWriter` event files in `<run>/tensorboard/<stage>/`
  (`tensorboard --logdir <run>/tensorboard`).
- `wandb`: an offline run in `<run>/wandb/offline-run-*` (`wandb sync` uploads it later). The user opts into
  a server with W&B's own WANDB_MODE (e.g. `online`); WANDB_PROJECT, WANDB_ENTITY and WANDB_DIR are honoured.
- `mlflow`: MLflow's local file store `<run>/mlruns` (a `file:` tracking URI), experiment `distill-ray`;
  MLFLOW_TRACKING_URI (a server, or a database such as `sqlite:///...`) and MLFLOW_EXPERIMENT_NAME override
  them. MLflow 3 keeps the file store in maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE=true,
  which is set for our default (so `mlflow ui` needs it too: docs/training.md).

No network by default: besides the local modes above, W&B's error reports (Sentry) and MLflow's usage telemetry
are switched off in the training process unless the user set WANDB_ERROR_REPORTING / MLFLOW_DISABLE_TELEMETRY.
A tracker that fails while logging is dropped with a warning; the training run goes on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "distill-ray"  # W&B project and MLflow experiment unless the user names one
# The module each tracker needs, and how to install it.
REQUIREMENTS = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "wandb": ("wandb", "pip install 'distill-ray[tracking]'"),
    "mlflow": ("mlflow", "pip install 'distill-ray[tracking]'"),
}


def missing_requirements(names: list[str]) -> list[str]:
    """`name: how to install it` for each tracker in `names` whose library is not importable here."""
    out = []
    for name in names:
        module, how = REQUIREMENTS[name]
        if importlib.util.find_spec(module) is None:
            out.append(f"{name} needs the {module} package ({how})")
    return out


class Trackers:
    """The trackers of `names`, each opened now; `log` and `close` go to all of them."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str, config: dict[str, Any]):
        self.run_dir, self.run_name = Path(run_dir), run_name
        self.open: dict[str, Any] = {}
        for name in names:
            self.open[name] = OPENERS[name](self.run_dir, run_name, config)
            log.info("training metrics go to %s (%s)", name, self.open[name].where)

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if not values:
            return
        for name, tracker in list(self.open.items()):
            try:
                tracker.log(values, step)
            except Exception as exc:  # noqa: BLE001 - a metrics sink must not end a training run
                log.warning("%s failed to log step %d and is dropped for this run: %s", name, step, exc)
                self.open.pop(name)

    def close(self, ok: bool = True) -> None:
        for name, tracker in self.open.items():
            try:
                tracker.close(ok)
            except Exception as exc:  # noqa: BLE001
                log.warning("%s failed to close: %s", name, exc)
        self.open = {}


class TensorBoard:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.where = str(run_dir / "tensorboard" / run_name)
        self.writer = SummaryWriter(log_dir=self.where, flush_secs=10)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, ok: bool) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # no crash reports to W&B's Sentry
        os.environ.setdefault("WANDB_SILENT", "true")  # its console chatter would interleave with the loop's
        import wandb

        mode = os.environ.get("WANDB_MODE") or "offline"  # a server only when the user asks for one
        folder = Path(os.environ.get("WANDB_DIR") or run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or EXPERIMENT, name=run_name,
                              group=run_dir.name, job_type=str(config.get("job_type", "train")), dir=str(folder),
                              mode=mode, config=config, reinit="create_new",
                              settings=wandb.Settings(console="off", save_code=False))  # fmt: skip
        self.where = f"{mode} run in {folder / 'wandb'}"

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class MLflow:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports to MLflow's servers
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # the local file store: no server, no database driver, safe on a shared filesystem
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=run_name,
                                             tags={"job_type": str(config.get("job_type", "")),
                                                   "run_dir": str(run_dir)}).info.run_id  # fmt: skip
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in _flatten(config).items() if v is not None]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.where = f"{uri}, experiment {name}"

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


OPENERS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return out
