"""Continuous batching (iteration-level scheduling) over a `GenerationEngine`'s model.

Where it sits: the Serve teacher replica (`serve/teacher.py`) submits every sequence of every request here as it
arrives and awaits its future; in-process callers (benchmarks, tests) use `generate`. It decides which sequences
the model steps together; the engine keeps everything about one sequence (validation, sampling with the row's own
generator, logprobs, stop strings, the context cap, the reply's text), so results keep the engine's contract.

Scheduling, once per model step (Orca's iteration-level scheduling, Yu et al., OSDI 2022, section 3.1):
- **Join:** when a quarter of the `max_slots` slots is free (or every waiting sequence fits, or nothing runs),
  waiting sequences are prefilled together and join the running batch. Sequences with the same prompt ids (the n samples of one prompt, or of one problem) are
  prefilled once and the prompt's KV cache is copied to each (`batch_select_indices` repeats the row).
- **Step:** every running sequence gets its next token (from the prefill's or the last step's logits), then
  one decode step runs over all of them.
- **Leave:** a sequence that finished (eos, stop string, length) leaves at once: its future is resolved and its
  rows of the KV cache, attention mask and positions are dropped; cache columns no remaining sequence uses
  (left padding) are trimmed.

Why by hand: transformers' own continuous batching (`generate_batch`, the `ContinuousBatchingManager`) takes
one `GenerationConfig` for every request and draws from one global RNG, so it keeps neither per-row temperatures
and seeds that reproduce whatever shares the batch nor logprobs of the raw distribution with top alternatives
(docs/engines.md has the measurements). vLLM keeps them but does not run on these CPUs. This module reuses the
engine's row logic and only adds the KV-cache bookkeeping a join and a leave need.

Limits: models whose cache layers are all full-attention `DynamicLayer`s (Llama, Qwen2, Mistral without sliding
window, SmolLM2, ...); `supports(engine)` says whether a model qualifies, and the teacher falls back to static
batches otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from distill_ray.models.engine import GenerationEngine, GenRequest, GenResult, _Row

log = logging.getLogger(__name__)


def supports(engine: GenerationEngine) -> bool:
    """True when the engine's model keeps a plain (full-attention, non-sliding) dynamic KV cache, which is what
    rows joining and leaving a running batch need."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=engine.model.config)
    except Exception:  # noqa: BLE001 - a model whose config the cache cannot read: not supported
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


@dataclass
class _Live:
    """A running sequence: the engine's row state and the future its caller awaits."""

    row: _Row
    future: Future


class ContinuousBatcher:
    """Iteration-level scheduling of `GenRequest`s over one engine, on one thread (the model's only user).

    `submit(req)` -> a Future of the GenResult (ValueError for an invalid request, set at submit time); `call(fn)`
    runs `fn()` on the same thread between two steps (e.g. the engine's `score`), so nothing else touches the
    model while it steps. `start()` runs the loop on a daemon thread; without it, `generate(requests)` runs the
    loop on the caller's thread until those requests are done. `stats` counts steps, prefills and tokens.
    """

    def __init__(self, engine: GenerationEngine, max_slots: int = 32):
        if max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {max_slots}")
        self.engine, self.max_slots = engine, max_slots
        self.min_join = max(1, max_slots // 4)  # free slots that let waiting sequences join a running batch
        self._waiting: deque[_Live] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._running: list[_Live] = []
        self._cache = None  # DynamicCache over the running rows, in their order
        self._mask: torch.Tensor | None = None  # (rows, cached tokens + 1): 1 where a real token is
        self._positions: torch.Tensor | None = None  # (rows, 1): the position of each row's next token
        self._logits: torch.Tensor | None = None  # (rows, vocab): where each row's next token is drawn from
        # steps: decode steps; prefills: groups that joined (one forward each) of prefilled_prompts distinct prompts,
        # shared_prefills: sequences that joined on another's prefill; tokens: tokens chosen; running: now.
        self.stats = {"steps": 0, "prefills": 0, "prefilled_prompts": 0, "shared_prefills": 0, "tokens": 0,
                      "running": 0, "max_running": 0}  # fmt: skip

    # ---- the caller's side -----------------------------------------------------------------------

    def submit(self, req: GenRequest) -> Future:
        """Queue one sequence; the Future resolves to its GenResult (or holds the engine's ValueError)."""
        future: Future = Future()
        try:
            self.engine._validate(req, 0)
        except ValueError as exc:
            future.set_exception(exc)
            return future
        with self._wake:
            self._waiting.append(_Live(self.engine._start_row(req), future))
            self._wake.notify()
        return future

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn()` on the loop's thread between two steps; the Future holds its value or exception."""
        future: Future = Future()
        with self._wake:
            self._calls.append((fn, future))
            self._wake.notify()
        return future

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """All `requests` through the scheduler, results in request order (raises the first request's ValueError).
        Runs the loop on this thread unless `start()` already runs it on its own."""
        futures = [self.submit(req) for req in requests]
        if self._thread is None:
            while not all(f.done() for f in futures):
                self._iteration()
        return [f.result() for f in futures]

    def start(self) -> None:
        """Run the scheduling loop on a daemon thread until `stop()`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="continuous-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ---- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._waiting or self._calls or self._running):
                    self._wake.wait()
                if self._stopping:
                    break
            try:
                self._iteration()
            except Exception as exc:  # noqa: BLE001 - a failed step fails its sequences, not the loop
                log.exception("continuous batching step failed")
                self._fail_running(exc)
        self._fail_running(RuntimeError("the engine stopped"))

    def _iteration(self) -> None:
        """Between-step calls, then join, choose and leave, then one decode step."""
        self._run_calls()
        with torch.inference_mode():
            self._join()
            if not self._running:
                return
            next_ids = self.engine._advance([live.row for live in self._running], self._logits)
            self.stats["tokens"] += len(self._running)
            next_ids = self._leave(next_ids)
            if self._running:
                self._decode_step(next_ids)

    def _run_calls(self) -> None:
        while True:
            with self._wake:
                if not self._calls:
                    return
                fn, future = self._calls.popleft()
            try:
                future.set_result(fn())
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    def _join(self) -> None:
        """Prefill waiting sequences into free slots (one forward for the group, one per distinct prompt)."""
        with self._wake:
            free = self.max_slots - len(self._running)
            # Joins are batched: a prefill of several prompts costs little more than one on a busy engine, and each
            # join copies the running KV cache once. So sequences wait until a quarter of the slots are free, unless
            # every waiting one fits now or nothing runs.
            if self._running and free < self.min_join and len(self._waiting) > free:
                return
            joining = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
        if not joining:
            return
        prompts: dict[tuple[int, ...], int] = {}
        owner = [prompts.setdefault(tuple(live.row.req.prompt_ids), len(prompts)) for live in joining]
        distinct = [list(p) for p in prompts]
        ids, mask, positions = self.engine._left_pad(distinct)
        out = self.engine.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                logits_to_keep=1)  # fmt: skip
        index = torch.tensor(owner, device=ids.device)
        cache = out.past_key_values
        if len(distinct) != len(joining) or owner != list(range(len(owner))):
            cache.batch_select_indices(index)  # repeats a shared prompt's rows: one prefill, n sequences
        self.stats["prefills"] += 1
        self.stats["prefilled_prompts"] += len(distinct)
        self.stats["shared_prefills"] += len(joining) - len(distinct)
        self._merge(joining, cache, mask[index], positions[index, -1:] + 1, out.logits[index, -1, :].float())

    def _merge(self, joining: list[_Live], cache, mask: torch.Tensor, positions: torch.Tensor,
               logits: torch.Tensor) -> None:  # fmt: skip
        """Append the joining rows to the running batch, left-padding whichever side has the shorter cache."""
        if not self._running:
            self._running, self._cache, self._mask = list(joining), cache, mask
            self._positions, self._logits = positions, logits
        else:
            width = max(self._mask.shape[1], mask.shape[1])
            for mine, theirs in zip(self._cache.layers, cache.layers):
                mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)], dim=0)
                mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)], dim=0)
            self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)], dim=0)
            self._positions = torch.cat([self._positions, positions], dim=0)
            self._logits = torch.cat([self._logits, logits], dim=0)
            self._running.extend(joining)
        self.stats["running"] = len(self._running)
        self.stats["max_running"] = max(self.stats["max_running"], len(self._running))

    def _leave(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Resolve finished sequences and drop their rows; returns the remaining rows' next input ids."""
        keep = [i for i, live in enumerate(self._running) if not live.row.done]
        for live in self._running:
            if live.row.done:
                live.future.set_result(self.engine._result(live.row))
        if len(keep) == len(self._running):
            return next_ids
        self._running = [self._running[i] for i in keep]
        self.stats["running"] = len(keep)
        if not keep:
            self._cache = self._mask = self._positions = self._logits = None
            return next_ids[:0]
        index = torch.tensor(keep, device=next_ids.device)
        self._cache.batch_select_indices(index)
        self._mask, self._positions = self._mask[index], self._positions[index]
        # Columns no remaining row attends to (the left padding of rows that left) are dropped.
        first = int(self._mask.any(dim=0).nonzero()[0])
        if first > 0:
            self._mask = self._mask[:, first:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        return next_ids[index]

    def _decode_step(self, next_ids: torch.Tensor) -> None:
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._running), 1))], dim=1)
        out = self.engine.model(input_ids=next_ids.view(-1, 1), attention_mask=self._mask,
                                position_ids=self._positions, past_key_values=self._cache, use_cache=True)  # fmt: skip
        self._cache = out.past_key_values
        self._positions = self._positions + 1
        self._logits = out.logits[:, -1, :].float()
        self.stats["steps"] += 1

    def _fail_running(self, exc: BaseException) -> None:
        with self._wake:
            pending = self._running + list(self._waiting)
            self._waiting.clear()
        self._running, self._cache = [], None
        for live in pending:
            if not live.future.done():
                live.future.set_exception(exc)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` with zeros prepended along `dim` up to `width` (KV rows and mask columns a row does not attend to)."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
