"""The base of every config section: unknown keys are errors, assignments are validated, floats are finite."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Every config section derives from this, so its rules hold for every key at once.

    `allow_inf_nan=False`: a float key (also inside a list, tuple or mapping, e.g. `inference.temperature`
    or `processing.collect.task_weights`) refuses inf, -inf and nan. YAML reads `.inf` / `.nan` and JSON
    `Infinity` / `NaN` as floats, and none of our settings means anything at infinity: a `training.dpo.beta`
    of inf would reach the loss. A field that ever needs them must say so with its own `allow_inf_nan=True`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
