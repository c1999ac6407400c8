"""Config of the data stages (METHODS.md sections 1-3): `processing.<stage>` for each job type.

collect -> generate -> judge (difficulty / rv / cd) -> rewrite -> select (target-aware) ->
curate (AdvDistill groups) / pairs (DPO, RM) ; synthesize (EasyDistill operators) stands alone.
Every field is documented here; `distill-ray validate --explain` prints these descriptions.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from distill_ray.config.section import Section
from distill_ray.prompts import DATA_PROMPTS

Difficulty = Literal["easy", "medium", "hard"]


class SourceConfig(Section):
    """One input of the collector; same path forms as dataset.instruction_path (files, bundled:, procedural:)."""

    path: str = Field(description="Source spec: .jsonl/.json/.parquet file or folder, a local HF `datasets` "
                      "folder (save_to_disk), `bundled:NAME` or `procedural:arithmetic`.")  # fmt: skip
    task: str = Field("math", pattern=r"^[A-Za-z0-9_.-]+$", description="Task type of every row (math, code, ...).")
    name: str | None = Field(None, description="Label in the `source` column (default: derived from path).")
    prompt_field: str = Field("question", description="Field holding the problem text.")
    answer_field: str | None = Field("answer", description="Field holding the reference answer (None: none).")
    answer_format: Literal["plain", "gsm8k"] = Field("plain", description="`gsm8k`: the text after '####'.")
    id_field: str | None = Field(None, description="Field holding a stable id (default: hash of source+problem).")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows of this source.")


class CollectConfig(Section):
    """Data source collector: several sources -> one schema, dedup, task-aware re-sampling."""

    sources: list[SourceConfig] = Field(default_factory=list, description="Inputs, in priority order for dedup.")
    dedup: bool = Field(True, description="Drop rows whose normalised problem text was seen in an earlier row.")
    task_caps: dict[str, int] = Field(default_factory=dict, description="Most rows kept per task (task -> cap).")
    task_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Target share of each task in the output (task -> weight, normalised to sum 1); the "
        "largest mix achievable without repeating rows is kept. Applied after task_caps.",
    )
    seed: int = Field(42, description="Seed of the (deterministic) choice of which rows a cap keeps.")

    @field_validator("task_weights")
    @classmethod
    def _positive(cls, v):
        if any(w <= 0 for w in v.values()):
            raise ValueError("task weights must be positive")
        return v


JudgeCriterion = Literal["difficulty", "rv", "cd"]
CRITERIA: tuple[str, ...] = get_args(JudgeCriterion)  # what a teacher judge can grade (distill_ray/grading/judge.py)


class JudgeConfig(Section):
    """The teacher as judge of each CoT: difficulty (easy/medium/hard), RV and CD (integers 0-9)."""

    criteria: list[JudgeCriterion] = Field(
        default_factory=lambda: ["difficulty"], description=f"What to judge, any of {', '.join(CRITERIA)}."
    )
    max_attempts: int = Field(3, ge=1, description="Asks per criterion before an unparseable CoT is rejected.")
    temperature: float = Field(0.0, ge=0, description="Temperature of the first ask.")
    retry_temperature: float = Field(0.7, ge=0, description="Temperature of later asks (a new seed each time).")
    max_new_tokens: int = Field(16, ge=1, description="Tokens the judge may write (the verdict is one word).")
    seed: int = Field(0, description="Base seed of the judge's sampling.")


class RewriteConfig(Section):
    """Rewriter + verifier: CoTs at the chosen levels are rewritten once, then every CoT is verified."""

    levels: list[Difficulty] = Field(
        default_factory=lambda: ["easy", "hard"], description="Difficulty levels whose CoTs are rewritten."
    )
    temperature: float = Field(0.3, ge=0, description="Sampling temperature of the rewrite.")
    max_new_tokens: int = Field(512, ge=1, description="Tokens a rewrite may take.")
    seed: int = Field(0, description="Base seed of the rewriter's sampling.")


class SelectConfig(Section):
    """Target-aware sampler: keep verified CoTs whose scores suit the student, per problem."""

    require_correct: bool = Field(True, description="Keep only CoTs whose answer verified.")
    rv: tuple[int, int] | None = Field(None, description="Inclusive [low, high] interval of RV (None: any).")
    cd: tuple[int, int] | None = Field(None, description="Inclusive [low, high] interval of CD (None: any).")
    difficulty: list[Difficulty] | None = Field(None, description="Difficulty levels to keep (None: any).")
    max_per_problem: int | None = Field(None, ge=1, description="At most this many CoTs per problem.")
    fallback: Literal["none", "nearest"] = Field(
        "none",
        description="When no CoT of a problem fits: `none` drops the problem (its CoTs are rejected with the "
        "reason); `nearest` keeps the correct CoT(s) closest to the intervals, marked `fallback=true`.",
    )
    split_by: Literal["difficulty"] | None = Field(
        None, description="Also write the selection split into `<stage>/<value>/` folders (curriculum SFT)."
    )

    @field_validator("rv", "cd")
    @classmethod
    def _interval(cls, v):
        if v is not None and not 0 <= v[0] <= v[1] <= 9:
            raise ValueError("must be [low, high] with 0 <= low <= high <= 9")
        return v


class CurateConfig(Section):
    """AdvDistill curation: a problem's G scored responses become one group row for AdvDistill training."""

    min_correct: int = Field(1, ge=1, description="Keep a group only with at least this many correct responses.")
    min_group_size: int = Field(2, ge=1, description="Groups smaller than this are rejected.")


class PairsConfig(Section):
    """Preference pairs for DPO / CogPO and pairwise reward models."""

    mode: Literal["correctness", "teacher_student"] = Field(
        "correctness",
        description="`correctness`: a verified-correct response (chosen) vs an incorrect one of the same "
        "problem; `teacher_student`: the teacher's correct response vs the student's answer (`student_path`).",
    )
    student_path: str | None = Field(None, description="Student generations (teacher_student mode).")
    max_pairs_per_problem: int = Field(1, ge=1, description="Most pairs built from one problem.")
    beta: float | None = Field(None, gt=0, description="Per-pair beta written to the `beta` column (CogPO).")
    seed: int = Field(42, description="Seed of the pairing.")


class SynthesizeConfig(Section):
    """EasyDistill data synthesis operators (one per stage)."""

    operator: Literal["expand_instruction", "refine_instruction", "extract_pairs", "cot_long_to_short",
                      "cot_short_to_long"] = Field(
        "expand_instruction",
        description="`expand_instruction`: n new instructions per input; `refine_instruction`: a clearer "
        "instruction; `extract_pairs`: instruction/response pairs from raw text; `cot_long_to_short` / "
        "`cot_short_to_long`: shorten / extend each CoT (verified again when a reference exists).",
    )  # fmt: skip
    num_variants: int = Field(3, ge=1, description="n for expand_instruction and extract_pairs.")
    text_field: str = Field("text", description="Field holding the raw text (extract_pairs).")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature.")
    max_new_tokens: int = Field(256, ge=1, description="Tokens per teacher answer.")
    max_attempts: int = Field(2, ge=1, description="Asks before an unparseable answer is rejected.")
    seed: int = Field(0, description="Base seed.")


class ProcessingConfig(Section):
    """Settings of the data stages, one sub-section per job type, plus prompt overrides."""

    collect: CollectConfig = Field(default_factory=CollectConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    synthesize: SynthesizeConfig = Field(default_factory=SynthesizeConfig)
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description=f"Replace a judge/rewrite/synthesis prompt by name ({', '.join(DATA_PROMPTS)}); "
        "placeholders in braces ({problem}, {response}, {instruction}, {text}, {n}) are filled in.",
    )

    @model_validator(mode="after")
    def _known_prompts(self):
        unknown = sorted(set(self.prompts) - set(DATA_PROMPTS))
        if unknown:
            raise ValueError(f"unknown prompt name(s) {unknown}; known: {', '.join(DATA_PROMPTS)}")
        return self

