"""Build and load the tiny *student*: a byte-level BPE tokenizer plus a small Qwen2-style causal LM.

Everything is made locally (no hub downloads): the tokenizer is trained on local Python sources
(the stdlib by default) and the model is randomly initialised from a config under a fixed seed, so a
test or bench gets the same student every time. The result is an ordinary transformers model
directory (``save_pretrained`` + tokenizer files loadable by ``PreTrainedTokenizerFast``), the same
shape of directory a real 0.5B-1.5B student has, so export and sampling code paths are shared.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from settle.streams.contracts.prompt import EDITABLE_REGION_END, ENDOFTEXT, SPECIAL_TOKENS

EOS_TOKEN = ENDOFTEXT
# SPECIAL_TOKENS come from the one prompt format; their order fixes the ids
# (<|endoftext|> is 0) and each must stay a single token.
# Sampling ends a row at either of these.
STOP_TOKENS: tuple[str, ...] = (EDITABLE_REGION_END, EOS_TOKEN)


@dataclass(frozen=True)
class StudentShape:
    """Model dimensions; ``vocab_size=None`` means 'use the tokenizer's'."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int | None = None
    tie_word_embeddings: bool = True
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02


SHAPES: dict[str, StudentShape] = {
    # Test-size students: tiny enough to build, export and sample in seconds on 2 CPU cores.
    # Untied head + wider init: a random tied tiny model greedily repeats one token forever,
    # which makes "greedy matches generate" checks vacuous; these produce varied sequences.
    "tiny": StudentShape(64, 2, 4, 2, 128, tie_word_embeddings=False, initializer_range=0.1),
    "small": StudentShape(128, 2, 4, 2, 256, tie_word_embeddings=False, initializer_range=0.1),
    # Qwen2.5-Coder-0.5B's shape (random weights): for benches of the real serving cost.
    "qwen2.5-0.5b": StudentShape(896, 24, 14, 2, 4864, vocab_size=151936),
}


def default_source_dir() -> Path:
    """The stdlib of the running interpreter: plenty of Python, always present, no download."""
    return Path(sysconfig.get_paths()["stdlib"])


def _python_files(source_dir: Path, max_files: int | None) -> list[str]:
    # Sorted so the training corpus (and thus the merges) is the same on every run.
    files = sorted(str(p) for p in source_dir.rglob("*.py") if "site-packages" not in p.parts)
    return files[:max_files] if max_files else files


def _read_texts(files: Iterable[str]) -> Iterator[str]:
    for f in files:
        try:
            yield Path(f).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def train_tokenizer(
    source_dir: str | Path | None = None,
    vocab_size: int = 4096,
    max_files: int | None = None,
):
    """Train a byte-level BPE ``tokenizers.Tokenizer`` that keeps ``SPECIAL_TOKENS`` whole.

    Byte-level means any text round-trips (no unknown token), which matters for code excerpts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    files = _python_files(Path(source_dir) if source_dir else default_source_dir(), max_files)
    if not files:
        raise ValueError(f"no .py files under {source_dir}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_read_texts(files), trainer=trainer, length=len(files))
    return tok


def wrap_tokenizer(tok):
    """Wrap a ``tokenizers.Tokenizer`` as a ``PreTrainedTokenizerFast`` with eos/pad set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t != EOS_TOKEN],
        padding_side="left",
        model_max_length=32768,
    )


def student_config(shape: str | StudentShape, vocab_size: int, eos_token_id: int):
    """A Qwen2 config for ``shape``; the tokenizer's vocab is used unless the shape fixes one."""
    from transformers import Qwen2Config

    s = SHAPES[shape] if isinstance(shape, str) else shape
    return Qwen2Config(
        vocab_size=s.vocab_size or vocab_size,
        hidden_size=s.hidden_size,
        num_hidden_layers=s.num_hidden_layers,
        num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_key_value_heads,
        intermediate_size=s.intermediate_size,
        tie_word_embeddings=s.tie_word_embeddings,
        rope_theta=s.rope_theta,
        max_position_embeddings=s.max_position_embeddings,
        rms_norm_eps=s.rms_norm_eps,
        initializer_range=s.initializer_range,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        bos_token_id=None,
        use_cache=True,
    )


def build_student(
    out_dir: str | Path,
    shape: str | StudentShape = "tiny",
    seed: int = 0,
    vocab_size: int = 4096,
    source_dir: str | Path | None = None,
    max_files: int | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a tokenizer + randomly initialised student to ``out_dir``; deterministic under ``seed``.

    ``max_files`` caps the tokenizer's training corpus (tests use a few dozen files for speed).
    """
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_tok = wrap_tokenizer(train_tokenizer(source_dir, vocab_size, max_files))
    eos_id = hf_tok.convert_tokens_to_ids(EOS_TOKEN)
    config = student_config(shape, len(hf_tok), eos_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype)).eval()
    stop_ids = [hf_tok.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    model.generation_config = GenerationConfig(eos_token_id=stop_ids, pad_token_id=eos_id)
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    return out


def load_tokenizer(model_dir: str | Path):
    """The student's tokenizer alone (``PreTrainedTokenizerFast``), without loading weights."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(model_dir)


def load_student(model_dir: str | Path, dtype: str | None = None, device: str = "cpu"):
    """Load ``(model, tokenizer)`` from a student directory, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    kw = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw).to(device).eval()
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    return model, tok


def stop_token_ids(tokenizer) -> list[int]:
    """Ids of ``STOP_TOKENS`` in ``tokenizer``."""
    return [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]


def make_model_dir(dest: str | Path, shape: str = "tiny", seed: int = 0, max_files: int | None = None,
                   hf_dir: str | Path | None = None) -> Path:
    """A servable model directory: ONNX export + tokenizer at the top, transformers weights in ``hf/``.

    This is the layout scorers load and the trainer fine-tunes from; a random
    student is built first unless ``hf_dir`` names existing weights.
    """
    from settle.trainer.student.export import export_onnx

    dest = Path(dest)
    hf = dest / "hf"
    if hf_dir is None:
        build_student(hf, shape=shape, seed=seed, max_files=max_files)
    else:
        import shutil

        shutil.copytree(hf_dir, hf)
    export_onnx(hf, dest)
    return dest
