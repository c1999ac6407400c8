"""Teachers as one Ray Serve application speaking the OpenAI API (chat, completions, models).

Where it sits: `jobs/` and the CLI deploy it with `deploy_teacher` (one model) or `deploy_teachers` (several);
any OpenAI client talks to it over HTTP at `TeacherEndpoint.base_url`, and in-cluster callers (the Ray Data
generation job) call `handle.chat.remote(body)` on its DeploymentHandle. The wire format lives in
`distill_ray.models.openai_protocol`.

Shape of the app:
- `TeacherRouter` (the ingress) owns the HTTP routes. It reads the request's `model` field and forwards the
  body to that teacher's deployment; `GET /v1/models` lists every teacher. It only awaits, so it reserves no CPU.
- One `TeacherDeployment` per model (named `TeacherDeployment` when alone, `TeacherDeployment-<name>` when
  there are several), each with its own replicas and autoscaling. Each replica owns one
  `distill_ray.models.engine.GenerationEngine`.

Batching: every request is split into single sequences (n choices x prompts). With `scheduling: continuous` (the
default; docs/engines.md) each sequence is submitted to the replica's `ContinuousBatcher`
(`distill_ray.models.continuous`) as it arrives and joins the running batch at the next decode step; the
batcher's thread is the only one that touches the model, and scoring runs on it between two steps. With
`scheduling: static` each sequence goes through a
`@serve.batch` method, so sequences of concurrent requests share one engine batch. Prompts to score (legacy
completions with `echo` and `logprobs`, or `prompt_logprobs`: the teacher scoring API of
`distill_ray.models.openai_completions`) go one per prompt through a second `@serve.batch` method, so the
prompts of concurrent scoring requests share one forward pass; both queues take `max_batch_size` and
`batch_wait_timeout_s` from the config, and scoring load counts toward autoscaling like any request. The engine
runs in a one-thread executor: the event loop stays free for health checks and new arrivals, and the engine
(not thread-safe) never runs two batches at once, generation or scoring.

Streaming (`stream: true`): the router asks the teacher's `chat_stream` / `completions_stream` through a streaming
handle and writes server-sent events (`distill_ray.models.openai_stream`). The sequences go through the same batch
queue; the engine's per-token hook (`GenRequest.on_token`) posts each token back to the replica's event loop, and
a choice's result closes it with whatever the tokens had not yet made certain. The first chunk list is awaited
before the HTTP response starts, so validation errors are still plain 4xx answers.

Auth: with `ServeConfig.api_key` set, every `/v1/*` route needs `Authorization: Bearer <key>` (streams too);
`/health` stays open, and handle calls are in-cluster and trusted.
"""

# No `from __future__ import annotations` here: Serve cloudpickles the FastAPI app with the route
# methods by value, and string annotations ("Request") cannot be resolved in the replica, which
# makes FastAPI read `request` as a query parameter (every call answers 422).

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from distill_ray.config.schema import InferenceConfig, ServeConfig
from distill_ray.models.continuous import ContinuousBatcher, supports
from distill_ray.models.engine import GenerationEngine, GenRequest, GenResult, pick_device
from distill_ray.models.loading import resolve_model
from distill_ray.models.openai_completions import (
    CompletionRequest,
    PromptEcho,
    completion_response,
    no_completions,
    parse_completion_request,
    prompt_echo,
)
from distill_ray.models.openai_protocol import ProtocolError, chat_response, models_response, parse_chat_request
from distill_ray.models.openai_stream import DONE, ChatStream, CompletionStream, ReplyDeltas, sse_error, sse_event
from distill_ray.models.teachers import Teacher, model_teacher
from serve.http import add_error_handlers, check_api_key, json_body, start_proxy
from serve.metrics import TeacherMetrics

# The deployment whose replicas decode (the one that autoscales); benchmarks and manifests refer to it by name.
# With several teachers in one app, each gets `TEACHER_DEPLOYMENT-<served name>`.
TEACHER_DEPLOYMENT = "TeacherDeployment"
ROUTER_DEPLOYMENT = "TeacherRouter"

logger = logging.getLogger(__name__)
app = FastAPI(title="distill-ray teacher", docs_url=None, redoc_url=None)
add_error_handlers(app, "teacher")


def request_sequences(req, prompt_ids: list[int]) -> list[GenRequest]:
    """The engine sequences a parsed chat/completion request asks for on one prompt: one per choice."""
    return [
        GenRequest(
            prompt_ids=prompt_ids,
            max_new_tokens=req.max_new_tokens,
            temperature=req.temperature_value,
            top_p=req.top_p_value,
            seed=seed,
            stop=req.stop_list,
            logprobs=req.want_logprobs,
            top_logprobs=req.top_logprobs_value,
        )
        for seed in req.choice_seeds()
    ]


@serve.deployment(name=TEACHER_DEPLOYMENT)
class TeacherDeployment:
    """One replica of one teacher: an engine and the batch queue feeding it. Called by the router's handle,
    which has already matched the request's `model` to this teacher."""

    def __init__(self, model_spec: str, serve_cfg: ServeConfig, served_name: str):
        self.served_name = served_name
        device, dtype = pick_device(serve_cfg.device, serve_cfg.dtype)
        self.engine = GenerationEngine(resolve_model(model_spec), device=device, dtype=dtype,
                                       torch_threads=serve_cfg.torch_threads)  # fmt: skip
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher-engine")
        # Continuous scheduling: one thread owns the model; sequences join and leave its running batch per step,
        # and scoring runs on that thread between steps. Static: Serve's batch queue and the executor above.
        self.batcher = None
        if serve_cfg.scheduling == "continuous":
            if supports(self.engine):
                self.batcher = ContinuousBatcher(self.engine, max_slots=serve_cfg.max_batch_size)
                self.batcher.start()
            else:
                logger.warning("%s: its KV cache cannot join and leave a running batch; static batches instead",
                               served_name)  # fmt: skip
        # The decorator's sizes are placeholders; the config's win (the queue is built lazily on
        # the first call, so setting them here applies before any batch forms).
        for batched in (self._generate_one, self._score_one):
            batched.set_max_batch_size(serve_cfg.max_batch_size)
            batched.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)
        self._stats = {"batches": 0, "sequences": 0, "max_batch": 0,
                       "score_batches": 0, "scored_sequences": 0, "scored_tokens": 0, "max_score_batch": 0}  # fmt: skip
        self._metrics = TeacherMetrics(served_name)

    # ---- called through handles (the router's, or in-cluster callers') -----------------------

    async def chat(self, body: dict) -> dict:
        """A chat completion for an OpenAI request body; raises ProtocolError on bad input."""
        req = _whole(parse_chat_request(body), "chat_stream")
        prompt_ids = self._chat_prompt_ids(req)
        results = await self._sample(prompt_ids, req)
        return chat_response(results, self.served_name, len(prompt_ids))

    async def completions(self, body: dict) -> dict:
        """A legacy completion for an OpenAI request body: generated text, and the prompt's own log-probabilities
        for echo with logprobs or prompt_logprobs (distill_ray.models.openai_completions); raises ProtocolError on
        bad input."""
        req = _whole(parse_completion_request(body), "completions_stream")
        prompt_ids = [self._completion_prompt_ids(prompt, req) for prompt in req.prompts]
        scoring, sampling = self._prompt_scores(prompt_ids, req), self._completions(prompt_ids, req)
        scores, per_prompt = await asyncio.gather(scoring, sampling)
        echoes = self._echoes(prompt_ids, scores, req)
        return completion_response(per_prompt, self.served_name, [len(ids) for ids in prompt_ids], echoes=echoes)

    async def chat_stream(self, body: dict) -> AsyncIterator[list[dict]]:
        """A streamed chat completion (`stream: true`): lists of `chat.completion.chunk` bodies
        (distill_ray.models.openai_stream), the role chunks first. Call with `handle.options(stream=True)`. Bad input
        raises ProtocolError before the first list; an engine failure later raises mid-stream."""
        req = parse_chat_request(body)
        prompt_ids = self._chat_prompt_ids(req)
        stream = ChatStream(self.served_name, req.num_choices, len(prompt_ids), req.include_usage, req.want_logprobs)
        sequences = request_sequences(req, prompt_ids)
        yield stream.opening()
        async for chunks in self._stream_sequences(stream, sequences):
            yield chunks

    async def completions_stream(self, body: dict) -> AsyncIterator[list[dict]]:
        """A streamed legacy completion (`stream: true`): lists of `text_completion` chunk bodies, each choice's
        prompt chunk first with echo or prompt_logprobs. Errors as in `chat_stream`."""
        req = parse_completion_request(body)
        prompt_ids = [self._completion_prompt_ids(prompt, req) for prompt in req.prompts]
        echoes = self._echoes(prompt_ids, await self._prompt_scores(prompt_ids, req), req)
        stream = CompletionStream(self.served_name, req.num_choices, echoes, sum(len(ids) for ids in prompt_ids),
                                  req.include_usage, req.want_logprobs)  # fmt: skip
        yield stream.opening()
        if req.max_new_tokens == 0:
            yield [stream.result(i, r) for i, r in enumerate(r for _ in prompt_ids for r in no_completions(req))]
            yield stream.closing()
            return
        sequences = [seq for ids in prompt_ids for seq in request_sequences(req, ids)]
        async for chunks in self._stream_sequences(stream, sequences):
            yield chunks

    async def stats(self) -> dict:
        """Batching counters since start: generation batches run (continuous scheduling: groups of sequences that
        joined the running batch, one prefill each), sequences decoded, largest batch (continuous: most sequences
        running at once), and the same for scoring (`score_batches`, `scored_sequences`, `max_score_batch`) with
        the tokens scored. Continuous scheduling adds the scheduler's own counters under `continuous`."""
        stats = dict(self._stats)
        if self.batcher is not None:
            live = dict(self.batcher.stats)
            stats.update(batches=live["prefills"], max_batch=live["max_running"], continuous=live)
        return stats

    # ---- internals ---------------------------------------------------------------------------

    def _chat_prompt_ids(self, req) -> list[int]:
        try:
            prompt_ids = self.engine.chat_prompt_ids(req.template_messages())
        except Exception as exc:  # noqa: BLE001 - template errors are the client's messages, not a server fault
            raise ProtocolError(f"messages cannot be formatted by the chat template: {exc}", param="messages")
        self._check_prompt(prompt_ids, "messages")
        return prompt_ids

    def _echoes(self, prompt_ids: list[list[int]], scores: list, req: CompletionRequest) -> list[PromptEcho]:
        tokens = self.engine.token_bytes
        return [prompt_echo(ids, s, tokens, req) for ids, s in zip(prompt_ids, scores)]

    async def _stream_sequences(self, stream, sequences: list[GenRequest]) -> AsyncIterator[list[dict]]:
        """Run `sequences` (choice i is sequences[i]) through the batch queue and yield `stream`'s chunks as their
        tokens come: each list holds the chunks of every event that had arrived, then the closing chunks.

        The engine's `on_token` hook (its thread) posts each token to this loop, where `ReplyDeltas` makes the
        certain part of it text; the sequence's result closes its choice with the rest, so an engine that never
        calls the hook still streams, a choice at a time."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        replies = [ReplyDeltas(self.engine.token_bytes, seq.stop, self.engine.eos_token_ids) for seq in sequences]
        running = []
        for index, seq in enumerate(sequences):
            seq.on_token = functools.partial(_post_threadsafe, loop, events, index)
            task = asyncio.ensure_future(self._generate(seq))
            task.add_done_callback(functools.partial(_post_outcome, events, index))
            running.append(task)
        while not stream.finished:
            chunks = []
            for index, item in await _drain(events):
                if isinstance(item, BaseException):
                    raise ProtocolError(str(item)) if isinstance(item, ValueError) else item
                if isinstance(item, tuple):  # (token id, logprob entry) from the engine's hook
                    delta = replies[index].push(*item)
                    chunk = stream.delta(index, delta) if delta is not None else None
                else:
                    chunk = stream.result(index, item)
                if chunk is not None:
                    chunks.append(chunk)
            if chunks:
                yield chunks
        closing = stream.closing()
        if closing:
            yield closing

    def _check_prompt(self, prompt_ids: list[int], param: str, generating: bool = True) -> None:
        # Checked per request so one bad request cannot fail the engine batch it would share.
        if not prompt_ids:
            raise ProtocolError(f"{param}: the prompt is empty", param=param)
        limit = self.engine.max_context
        if limit is not None and len(prompt_ids) + int(generating) > limit:
            room = ", leaving no room to generate" if generating else ""
            raise ProtocolError(
                f"{param}: the prompt has {len(prompt_ids)} tokens; the model's context is {limit} tokens{room}",
                param=param,
                code="context_length_exceeded",
            )

    def _completion_prompt_ids(self, prompt: str | list[int], req: CompletionRequest) -> list[int]:
        """A completion prompt's token ids: a text tokenised, token ids as given (checked against the vocabulary)."""
        ids = self.engine.text_prompt_ids(prompt) if isinstance(prompt, str) else prompt
        vocab = self.engine.vocab_size
        outside = next((t for t in ids if t >= vocab), None)
        if outside is not None:
            raise ProtocolError(f"prompt: token id {outside} is outside the vocabulary [0, {vocab})", param="prompt")
        self._check_prompt(ids, "prompt", generating=req.max_new_tokens > 0)
        return ids

    async def _prompt_scores(self, prompt_ids: list[list[int]], req: CompletionRequest) -> list[list | None]:
        """The engine's `score` entries of every prompt, or None per prompt when the answer needs none."""
        k = req.scoring_top_logprobs
        if k is None:
            return [None] * len(prompt_ids)
        outcomes = await asyncio.gather(*(self._score_one((ids, k)) for ids in prompt_ids))
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise ProtocolError(f"prompt: {outcome}", param="prompt")
        return list(outcomes)

    async def _completions(self, prompt_ids: list[list[int]], req: CompletionRequest) -> list[list]:
        if req.max_new_tokens == 0:
            return [no_completions(req) for _ in prompt_ids]
        return list(await asyncio.gather(*(self._sample(ids, req) for ids in prompt_ids)))

    async def _sample(self, prompt_ids: list[int], req) -> list[GenResult]:
        """The request's n choices for one prompt, each as its own batched sequence."""
        outcomes = await asyncio.gather(*(self._generate(seq) for seq in request_sequences(req, prompt_ids)))
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise ProtocolError(str(outcome))
        return list(outcomes)

    async def _generate(self, seq: GenRequest) -> GenResult | ValueError:
        """One sequence's result, or the engine's ValueError for it: through the continuous scheduler when it
        runs (the sequence joins the running batch at the next step), else through Serve's batch queue."""
        if self.batcher is None:
            return await self._generate_one(seq)
        self._stats["sequences"] += 1
        started = time.perf_counter()
        try:
            result = await asyncio.wrap_future(self.batcher.submit(seq))
        except ValueError as exc:
            return exc
        self._metrics.record_batch(self.batcher.stats["running"] + 1, result.completion_tokens,
                                   time.perf_counter() - started)  # fmt: skip
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _generate_one(self, sequences: list[GenRequest]) -> list[GenResult | ValueError]:
        """Batched by Serve: called with single GenRequests, runs them as one engine batch.

        Returns a result or the ValueError for each sequence: the engine rejects a whole batch
        when one row is bad, so on rejection the rows are rerun alone and only bad ones fail.
        """
        self._stats["batches"] += 1
        self._stats["sequences"] += len(sequences)
        self._stats["max_batch"] = max(self._stats["max_batch"], len(sequences))
        return await _each_alone_on_rejection(self._run_engine, sequences)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _score_one(self, jobs: list[tuple[list[int], int]]) -> list[list | ValueError]:
        """Batched by Serve: called with single (prompt token ids, k) jobs, scores them with one engine `score` call
        (one forward pass) at the largest k among them; each answer keeps its own k when it is built.

        Returns the score entries or the ValueError for each job, rerunning the jobs alone on rejection as
        `_generate_one` does.
        """
        self._stats["score_batches"] += 1
        self._stats["scored_sequences"] += len(jobs)
        self._stats["scored_tokens"] += sum(len(ids) for ids, _ in jobs)
        self._stats["max_score_batch"] = max(self._stats["max_score_batch"], len(jobs))
        k = max(k for _, k in jobs)
        loop = asyncio.get_running_loop()

        async def score(batch: list[tuple[list[int], int]]) -> list[list]:
            sequences = [ids for ids, _ in batch]
            if self.batcher is not None:  # the model's one thread, between two decode steps
                return await asyncio.wrap_future(self.batcher.call(lambda: self.engine.score(sequences, k)))
            return await loop.run_in_executor(self._executor, self.engine.score, sequences, k)

        return await _each_alone_on_rejection(score, jobs)

    async def _run_engine(self, sequences: list[GenRequest]) -> list[GenResult]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        results = await loop.run_in_executor(self._executor, self.engine.generate, sequences)
        tokens = sum(r.completion_tokens for r in results)
        self._metrics.record_batch(len(sequences), tokens, time.perf_counter() - started)
        return results


def _whole(req, stream_method: str):
    """`req` when it asks for a whole answer; a stream asked of a whole-answer handle method is a ProtocolError."""
    if req.stream:
        raise ProtocolError(f"stream: true is answered by `{stream_method}` (handle.options(stream=True))",
                            param="stream")  # fmt: skip
    return req


def _post_threadsafe(loop, events: asyncio.Queue, index: int, token_id: int, entry) -> None:
    loop.call_soon_threadsafe(events.put_nowait, (index, (token_id, entry)))


def _post_outcome(events: asyncio.Queue, index: int, task: asyncio.Future) -> None:
    if task.cancelled():
        outcome = asyncio.CancelledError()
    else:
        outcome = task.exception() or task.result()
    events.put_nowait((index, outcome))


async def _drain(events: asyncio.Queue) -> list:
    """The next event and every other one already waiting (one chunk list per wake-up, not per token)."""
    found = [await events.get()]
    while not events.empty():
        found.append(events.get_nowait())
    return found


async def _each_alone_on_rejection(run, items: list) -> list:
    """`await run(items)` (one engine batch); if the engine rejects the batch with a ValueError, each item alone, so
    that only the bad ones fail: their outcome is the ValueError instead of a result."""
    try:
        return await run(items)
    except ValueError:
        outcomes = []
        for item in items:
            try:
                outcomes.extend(await run([item]))
            except ValueError as exc:
                outcomes.append(exc)
        return outcomes


# The router's helpers sit above it: `serve.ingress` pickles the routes by value when the class is defined, with
# the module globals that exist at that point.
def _wants_stream(body) -> bool:
    return isinstance(body, dict) and body.get("stream") is True


async def _server_sent_events(first: list[dict], rest) -> AsyncIterator[str]:
    """`data: {chunk}` per chunk, then `data: [DONE]`; a failure mid-stream ends it with an error event instead."""
    try:
        for chunk in first:
            yield sse_event(chunk)
        async for chunks in rest:
            for chunk in chunks:
                yield sse_event(chunk)
    except ProtocolError as exc:
        yield sse_event(getattr(exc, "cause", exc).body())
        return
    except Exception as exc:  # the response has started: an error event is all a client can get
        logger.exception("teacher stream failed")
        yield sse_error(f"internal error: {exc}")
        return
    yield DONE


@serve.deployment(name=ROUTER_DEPLOYMENT)
@serve.ingress(app)
class TeacherRouter:
    """The app's ingress: the OpenAI routes, and forwarding by the `model` field to each teacher's deployment.

    `teachers` maps served names to deployment handles; `aliases` maps the model specs they were deployed from
    to served names, so either may be sent. With one teacher, a request may leave `model` out.
    """

    def __init__(self, teachers: dict[str, DeploymentHandle], aliases: dict[str, str], api_key: str | None):
        self.teachers = teachers
        self.aliases = aliases
        self.api_key = api_key
        self._created = int(time.time())

    # ---- HTTP routes -------------------------------------------------------------------------

    @app.get("/health")
    async def http_health(self) -> dict:
        return {"status": "ok", "models": list(self.teachers)}

    @app.get("/v1/models")
    async def http_models(self, request: Request) -> dict:
        check_api_key(request, self.api_key)
        return models_response(list(self.teachers), created=self._created)

    @app.post("/v1/chat/completions", response_model=None)
    async def http_chat(self, request: Request):
        check_api_key(request, self.api_key)
        body = await json_body(request)
        if _wants_stream(body):
            return await self._stream(body, "chat_stream")
        return await self.chat(body)

    @app.post("/v1/completions", response_model=None)
    async def http_completions(self, request: Request):
        check_api_key(request, self.api_key)
        body = await json_body(request)
        if _wants_stream(body):
            return await self._stream(body, "completions_stream")
        return await self.completions(body)

    # ---- handle-callable methods (same bodies and answers as the routes) ---------------------

    async def chat(self, body: dict) -> dict:
        """A chat completion from the teacher the body's `model` names; raises ProtocolError on bad input."""
        return await self._forward(body, "chat")

    async def completions(self, body: dict) -> dict:
        """A legacy text completion from the teacher the body's `model` names."""
        return await self._forward(body, "completions")

    async def stats(self, model: str | None = None) -> dict:
        """One teacher's batching counters (the only one when `model` is None)."""
        return await self._teacher({"model": model}).stats.remote()

    # ---- internals ---------------------------------------------------------------------------

    async def _forward(self, body: dict, method: str) -> dict:
        handle = self._teacher(body)
        try:
            return await getattr(handle, method).remote(body)
        except ProtocolError as exc:  # arrives wrapped in Ray's task error: answer with the replica's own error
            raise getattr(exc, "cause", exc) from None

    async def _stream(self, body: dict, method: str) -> StreamingResponse:
        """Server-sent events of the teacher's chunk lists. The first list is awaited before the response starts,
        so a bad request is still an HTTP error (4xx with OpenAI's body); a failure later is an error event."""
        handle = self._teacher(body).options(stream=True)
        chunks = getattr(handle, method).remote(body)
        try:
            first = await chunks.__anext__()
        except ProtocolError as exc:
            raise getattr(exc, "cause", exc) from None
        return StreamingResponse(_server_sent_events(first, chunks), media_type="text/event-stream")

    def _teacher(self, body) -> DeploymentHandle:
        if not isinstance(body, dict):
            raise ProtocolError("the request body must be a JSON object")
        model = body.get("model")
        if model is None and len(self.teachers) == 1:
            return next(iter(self.teachers.values()))
        name = self.aliases.get(model, model) if isinstance(model, str) else None
        if name in self.teachers:
            return self.teachers[name]
        served = ", ".join(f"'{n}'" for n in self.teachers)
        if model is None:
            raise ProtocolError(f"model: required, this server serves several models: {served}", param="model")
        raise ProtocolError(f"The model '{model}' does not exist; this server serves {served}", status_code=404,
                            param="model", code="model_not_found")  # fmt: skip


def build_teachers_app(teachers: Sequence[Teacher], api_key: str | None = None) -> serve.Application:
    """The teacher Serve application: the router in front of one autoscaled deployment per teacher, each with
    its own `inference.serve` (replicas, autoscaling, batching), answering to its served name."""
    names = [t.served_name for t in teachers]
    if not teachers or len(set(names)) != len(names):
        raise ValueError(f"teachers need distinct served names, got {names}")
    handles, aliases = {}, {}
    for t in teachers:
        cfg = t.inference.serve
        deployment = TeacherDeployment.options(
            name=TEACHER_DEPLOYMENT if len(teachers) == 1 else f"{TEACHER_DEPLOYMENT}-{t.served_name}",
            **cfg.deployment_options(),
        )
        handles[t.served_name] = deployment.bind(t.spec, cfg, t.served_name)
        aliases.setdefault(t.spec, t.served_name)
    # The router holds every request while a teacher works on it, so its cap is the sum of theirs.
    capacity = sum(t.inference.serve.max_replicas * t.inference.serve.max_ongoing_requests for t in teachers)
    access_log = teachers[0].inference.serve.access_log
    shutdown_wait = min(t.inference.serve.graceful_shutdown_wait_loop_s for t in teachers)
    router = TeacherRouter.options(max_ongoing_requests=capacity, ray_actor_options={"num_cpus": 0},
                                   logging_config={"enable_access_log": access_log},
                                   graceful_shutdown_wait_loop_s=shutdown_wait)  # fmt: skip
    return router.bind(handles, aliases, api_key)


@dataclass
class TeacherEndpoint:
    """Where a deployed teacher app answers: OpenAI base URL for HTTP clients, handle for in-cluster."""

    app_name: str
    served_names: list[str]
    base_url: str
    handle: DeploymentHandle
    api_key: str | None

    @property
    def served_name(self) -> str:
        """The model name of a one-teacher app."""
        if len(self.served_names) != 1:
            raise ValueError(f"app '{self.app_name}' serves several models: {self.served_names}")
        return self.served_names[0]


def deploy_teachers(teachers: Sequence[Teacher], serve_cfg: ServeConfig, app_name: str = "teacher") -> TeacherEndpoint:
    """Deploy (or redeploy) the app at `/{app_name}` and wait until it runs. `serve_cfg` gives the proxy's
    host/port and the API key; each teacher's own `inference.serve` gives its replicas."""
    host, port = start_proxy(serve_cfg)
    application = build_teachers_app(teachers, serve_cfg.api_key)
    handle = serve.run(application, name=app_name, route_prefix=f"/{app_name}")
    base_url = f"http://{host}:{port}/{app_name}/v1"
    return TeacherEndpoint(app_name, [t.served_name for t in teachers], base_url, handle, serve_cfg.api_key)


def deploy_teacher(
    model_spec: str, serve_cfg: ServeConfig, app_name: str = "teacher", served_name: str | None = None
) -> TeacherEndpoint:
    """Deploy (or redeploy) a one-teacher app at `/{app_name}` and wait until it is running."""
    teacher = model_teacher(model_spec, InferenceConfig(serve=serve_cfg, model_name=served_name))
    return deploy_teachers([teacher], serve_cfg, app_name)


def undeploy(app_name: str = "teacher") -> None:
    """Delete the app (its replicas stop); Serve itself keeps running."""
    serve.delete(app_name)
