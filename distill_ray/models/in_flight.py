"""How many sequences a teacher-calling stage keeps in flight, and whether that fills the teacher engine's slots.

A stage runs `callers` Ray Data actors per teacher (`inference.concurrency`); each is handed `rows` rows at a
time (`inference.batch_size`) and sends all of their requests at once (`requests_per_row`: one per temperature),
each asking for `samples` sequences (OpenAI `n`). So the stage keeps

    callers x min(rows x requests_per_row, request cap share) x samples

sequences in flight. Our transformers engine decodes `inference.serve.max_batch_size` sequences at once per
replica (its slots; docs/engines.md), so the stage fills it when that number is at least
`max_replicas x max_batch_size`. `max_replicas`, not the current replica count: autoscaling adds replicas only
while the callers keep more requests in flight than the replicas' target, so a stage sized for fewer replicas
never lets the app grow. Serve holds at most `max_ongoing_requests` requests per replica; each caller's share of
`max_replicas x max_ongoing_requests` caps its requests, since more would only wait in Serve's queue.
Engines whose slots are not ours to know (`vllm`, `openai`) get no check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from distill_ray.models.teachers import Teacher


@dataclass(frozen=True)
class FillPlan:
    """One teacher's callers against its engine. `slots_per_replica`, `replicas` and `max_ongoing_requests` are None
    for engines whose slots are unknown (then `slots` is None and the plan never falls short)."""

    teacher: str
    callers: int
    rows: int
    requests_per_row: int
    samples: int
    replicas: int | None = None
    slots_per_replica: int | None = None
    max_ongoing_requests: int | None = None

    @property
    def request_cap(self) -> int | None:
        """Requests Serve holds at once over all replicas (`max_replicas x max_ongoing_requests`), or None."""
        if self.replicas is None or self.max_ongoing_requests is None:
            return None
        return self.replicas * self.max_ongoing_requests

    @property
    def requests_per_caller(self) -> int:
        """Requests one caller keeps in flight: a batch's rows x their requests, at most its share of the cap."""
        wanted = self.rows * self.requests_per_row
        cap = self.request_cap
        return wanted if cap is None else max(1, min(wanted, cap // self.callers))

    @property
    def sequences(self) -> int:
        """Sequences in flight over all callers when every caller is busy."""
        return self.callers * self.requests_per_caller * self.samples

    @property
    def slots(self) -> int | None:
        """The engine's slots over its replicas, or None when unknown."""
        if self.replicas is None or self.slots_per_replica is None:
            return None
        return self.replicas * self.slots_per_replica

    def shortfall(self) -> str | None:
        """A one-line account of why the engine's slots cannot all be busy, with the numbers, or None if they can."""
        slots = self.slots
        if slots is None or self.sequences >= slots:
            return None
        temps, samples = _plural(self.requests_per_row, "temperature"), _plural(self.samples, "sample")
        line = (f"teacher '{self.teacher}': {_plural(self.callers, 'caller')} x {_plural(self.rows, 'row')} x "
                f"{temps} x {samples} = {_plural(self.sequences, 'sequence')} in flight < {slots} engine slots "
                f"({_plural(self.replicas, 'replica')} x {self.slots_per_replica})")  # fmt: skip
        if self.requests_per_caller < self.rows * self.requests_per_row:
            return (line + f"; capped by {self.request_cap} requests at once ({self.replicas} x "
                    "inference.serve.max_ongoing_requests): raise inference.serve.max_ongoing_requests")  # fmt: skip
        return line + f"; raise inference.concurrency or inference.batch_size (to {self.rows_needed()} fills them)"

    def rows_needed(self) -> int | None:
        """The smallest `inference.batch_size` that would fill the slots with these callers, or None if unknown."""
        slots = self.slots
        if slots is None:
            return None
        return math.ceil(slots / (self.callers * self.requests_per_row * self.samples))


def fill_plan(teacher: Teacher) -> FillPlan:
    """The plan of a teacher called as the generation stage calls it (its `inference` section: callers, batch
    size, temperatures, samples; its `inference.serve` for the slots when it runs on our transformers engine)."""
    inf = teacher.inference
    plan = FillPlan(teacher.name, inf.concurrency, inf.batch_size, len(inf.temperatures), inf.num_samples)
    if teacher.engine != "transformers":
        return plan
    serve = inf.serve
    return FillPlan(plan.teacher, plan.callers, plan.rows, plan.requests_per_row, plan.samples,
                    serve.max_replicas, serve.max_batch_size, serve.max_ongoing_requests)  # fmt: skip


def fill_warning(stage: str, plans: list[FillPlan]) -> str | None:
    """One warning for a stage whose plans fall short (each such teacher's numbers, ` | `-joined), or None."""
    short = [s for p in plans if (s := p.shortfall())]
    return f"{stage}: {' | '.join(short)}" if short else None


def _plural(count: int | None, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")
