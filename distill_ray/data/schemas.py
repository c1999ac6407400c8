"""Every stage's row schema, in one place: the Arrow types each stage writes and what each column means.

Where it sits: producers (the Ray Data actors and group functions) build their output tables with these
schemas, and consumers (later stages, the trainers, the eval report) read the columns named here. A column
name means the same thing in every schema that has it; `COLUMNS` says what.

Why explicit schemas: a batch whose column is all None would otherwise become Arrow's `null` type, and the
Parquet parts of one stage would then disagree and fail to read back together.

The flow, stage -> schema (-> who reads it):
  source -> `PROBLEM` (in flight inside generate/synthesize/eval; `error`/`raw` carry a bad record)
  collect -> `COLLECTED_PROBLEM` (-> generate, as `dataset.instruction_path`)
  generate, eval -> `SAMPLE` (-> judge, rewrite, select, curate, pairs, sft, logits, kd; the eval report)
  judge -> `judged(input, criteria)`: the input plus difficulty / rv / cd
  rewrite, synthesize (CoT operators) -> `rewritten(input)`: the input plus the re-verified answer
  select -> `selected(input)`: the input plus `fallback`
  synthesize (instruction operators) -> `SYNTHESIZED`
  curate -> `GROUP` (-> advdistill)
  pairs -> `PAIR` (-> dpo, rm pairwise)
  logits -> `logits(dtype)` (-> kd)
"""

from __future__ import annotations

import pyarrow as pa

COLUMNS: dict[str, str] = {
    # problems
    "id": "problem id: the source's id field (collect prefixes it with the source label), else a hash of the text",
    "problem": "the problem or instruction text, as the user turn",
    "reference": "the reference answer used for verification (null when the source has none)",
    "answer": "the reference answer as collected (generate reads it as the reference)",
    "task": "task label (e.g. math, code) used for task-aware re-sampling",
    "source": "where the row came from (a source label or file name)",
    "extra": "the source record's other fields, as JSON",
    "error": "why the source record is unusable (the row is then quarantined, not processed)",
    "raw": "the unusable source record's text, kept for the rejected/ file",
    # teacher samples
    "sample_id": "one response's id, unique across teachers, temperatures and samples (resumes key on it)",
    "teacher": "the teacher's name in the roster (models.teachers key, or the served name)",
    "temperature": "sampling temperature of this response",
    "sample_index": "index of this response among the samples at its temperature",
    "response": "the full response text (<think> and <answer> blocks included)",
    "think": "the parsed <think> block",
    "final_answer": "the parsed final answer (\\boxed{} inside <answer>, else the parser's fallback)",
    "finish_reason": "why generation stopped: stop or length (length = cut at max_new_tokens)",
    "prompt_tokens": "prompt length in the teacher's tokens",
    "completion_tokens": "response length in the teacher's tokens",
    "correct": "the rule-based verifier's verdict against the reference (null: nothing to verify against)",
    "format_reward": "1.0 if the response follows the <think>/<answer>/\\boxed format, else 0.0",
    "cosine_reward": "AdvDistill's cosine length reward (METHODS.md section 3)",
    "reward": "the composite reward of the response",
    "advantage": "group-relative advantage of the reward among the problem's responses",
    "kept": "whether distillation.keep kept this response for training",
    # judgements (DistilQwen / ThoughtX)
    "difficulty": "the teacher judge's difficulty label: easy, medium or hard",
    "rv": "reasoning verbosity, judged 0-9",
    "cd": "cognitive difficulty, judged 0-9",
    # rewrite
    "original_response": "the response before rewriting (null when it was kept as is)",
    "rewritten": "whether the rewrite stage replaced the response",
    # select
    "fallback": "kept by the declared fallback although no CoT fitted the target intervals",
    # synthesize
    "parent_id": "id of the row the synthesized one was made from",
    "operator": "the synthesis operator that made the row",
    # AdvDistill groups
    "sample_ids": "the group's response ids, in group order",
    "responses": "the group's response texts",
    "advantages": "each response's group-relative advantage",
    "rewards": "each response's composite reward",
    "num_correct": "how many of the group's responses are correct",
    # preference pairs
    "pair_id": "one pair's id",
    "chosen": "the preferred response",
    "rejected": "the dispreferred response",
    "pair_type": "how the pair was made (processing.pairs.mode): correctness or teacher_student",
    "beta": "the pair's own DPO beta (CogPO); null means training.dpo.beta",
    # teacher logits (white-box KD)
    "prompt_ids": "the prompt's token ids, as the student is trained on it",
    "response_ids": "the response's token ids (teacher-forced)",
    "topk_ids": "per response position, the teacher's top-k token ids (flattened: positions x k)",
    "topk_logprobs": "their log-probabilities under the teacher's full softmax (same layout)",
}


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    unknown = [name for name, _ in fields if name not in COLUMNS]
    if unknown:
        raise ValueError(f"undocumented column(s) {unknown}: say what they mean in COLUMNS")
    return pa.schema(list(fields))


S, I, F, B = pa.string(), pa.int64(), pa.float64(), pa.bool_()

PROBLEM = _schema(("id", S), ("problem", S), ("reference", S), ("task", S), ("source", S), ("error", S), ("raw", S))

COLLECTED_PROBLEM = _schema(("id", S), ("task", S), ("problem", S), ("answer", S), ("source", S), ("extra", S))

SAMPLE = _schema(
    ("id", S), ("sample_id", S), ("problem", S), ("reference", S), ("task", S), ("source", S),
    ("teacher", S), ("temperature", F), ("sample_index", I),
    ("response", S), ("think", S), ("final_answer", S),
    ("finish_reason", S), ("prompt_tokens", I), ("completion_tokens", I),
    ("correct", B), ("format_reward", F), ("cosine_reward", F),
    ("reward", F), ("advantage", F), ("kept", B),
)  # fmt: skip

SYNTHESIZED = _schema(("id", S), ("problem", S), ("response", S), ("parent_id", S), ("operator", S), ("task", S),
                      ("source", S))  # fmt: skip

GROUP = _schema(
    ("id", S), ("problem", S), ("reference", S),
    ("sample_ids", pa.list_(S)), ("responses", pa.list_(S)), ("advantages", pa.list_(F)), ("rewards", pa.list_(F)),
    ("correct", pa.list_(B)), ("completion_tokens", pa.list_(I)), ("num_correct", I),
)  # fmt: skip

PAIR = _schema(("id", S), ("pair_id", S), ("problem", S), ("chosen", S), ("rejected", S), ("pair_type", S),
               ("beta", F))  # fmt: skip

JUDGEMENT_TYPES = {"difficulty": S, "rv": I, "cd": I}
VERIFIED_COLUMNS = (("response", S), ("think", S), ("final_answer", S), ("correct", B))
REWRITE_COLUMNS = (("original_response", S), ("rewritten", B))


# The declared type of every column a CoT row (a SAMPLE and what judge, rewrite and select add) may have: a
# JSON-lines file of CoT rows is read with these types, and a value of another JSON type rejects its row.
COT_COLUMN_TYPES: dict[str, pa.DataType] = {
    **{f.name: f.type for f in SAMPLE}, **JUDGEMENT_TYPES, **dict(VERIFIED_COLUMNS), **dict(REWRITE_COLUMNS),
    "fallback": B,
}  # fmt: skip


def _extend(input_schema: pa.Schema, added: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """The input's columns (any earlier value of an added column dropped), then the added ones."""
    names = {name for name, _ in added}
    return pa.schema([f for f in input_schema if f.name not in names] + list(_schema(*added)))


def judged(input_schema: pa.Schema, criteria: list[str]) -> pa.Schema:
    """judge's output: the input's columns plus one per criterion (replacing an earlier judgement of it)."""
    return _extend(input_schema, [(c, JUDGEMENT_TYPES[c]) for c in criteria])


def rewritten(input_schema: pa.Schema) -> pa.Schema:
    """rewrite's output: the input's columns, with the re-verified fields and the rewrite record present."""
    return _extend(input_schema, [*VERIFIED_COLUMNS, *REWRITE_COLUMNS])


def selected(input_schema: pa.Schema) -> pa.Schema:
    """select's output: the input's columns plus `fallback`."""
    return _extend(input_schema, [("fallback", B)])


def logits(logprob_dtype: str = "float16") -> pa.Schema:
    """The logits job's shards: one row per CoT, the teacher's top-k per response position."""
    value = pa.float16() if logprob_dtype == "float16" else pa.float32()
    return _schema(("sample_id", S), ("prompt_ids", pa.list_(pa.int32())), ("response_ids", pa.list_(pa.int32())),
                   ("topk_ids", pa.list_(pa.int32())), ("topk_logprobs", pa.list_(value)))  # fmt: skip


def columns_of(schema: pa.Schema, names: list[str] | tuple[str, ...]) -> pa.Schema:
    """The named columns of a declared schema, with its types (e.g. what a trainer writes of a PAIR row)."""
    return pa.schema([schema.field(name) for name in names])
