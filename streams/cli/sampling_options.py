"""The band and sampling options shared by `settle score` and `settle scorer`, turned into one ScoringConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from settle.streams.cli.common import err, fail
from settle.streams.contracts.sampling import SamplingConfig


def scoring_config(
    k: int, round_size: int, mode: str, solve_threshold: float, keep_min: float, keep_max: float,
    temperature: float, top_p: float, top_k: int, max_new_tokens: int, seed: int, adaptive: bool,
    policy_file: Path | None = None,
):  # type: ignore[no-untyped-def]
    import msgspec

    from settle.schemas.codecs import decode
    from settle.schemas.scored import BandPolicy
    from settle.streams.scoring.score import ScoringConfig

    try:
        if policy_file is not None:
            if not policy_file.is_file():
                raise ValueError(f"{policy_file}: no such file")
            policy = decode(policy_file.read_bytes(), BandPolicy, "json", invalid="invalid_policy")
        elif mode == "median":
            policy = BandPolicy(mode="median", k=k, round_size=round_size, keep_min_median=keep_min, keep_max_median=keep_max)
        elif mode == "solve_rate":
            policy = BandPolicy(
                k=k, round_size=round_size, solve_threshold=solve_threshold,
                keep_min_solve_rate=keep_min, keep_max_solve_rate=keep_max,
            )
        else:
            raise ValueError(f"--mode must be solve_rate or median, not {mode!r}")
    except (ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise fail(f"bad band policy: {exc}") from None
    try:
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens,
                                  seed=seed)
    except ValueError as exc:
        raise fail(f"bad sampling setting: --{str(exc).replace('_', '-')}") from None
    return ScoringConfig(policy=policy, sampling=sampling, adaptive=adaptive)


K = Annotated[int, typer.Option(min=1, help="samples per example")]
PolicyOpt = Annotated[
    Optional[Path], typer.Option("--policy", help="band policy JSON (from `settle calibrate`); overrides the band flags")
]
Mode = Annotated[str, typer.Option(help="band mode: solve_rate or median")]
# Sampling options, declared once; their defaults are SamplingConfig's.
DEFAULTS = SamplingConfig()
Temperature = Annotated[float, typer.Option(help=f"softmax temperature; 0 = greedy [{DEFAULTS.temperature}]")]
TopK = Annotated[int, typer.Option(help=f"tokens kept per step before top-p; 0 = the whole vocabulary [{DEFAULTS.top_k}]")]
TopP = Annotated[float, typer.Option(help=f"nucleus mass in (0, 1] [{DEFAULTS.top_p}]")]
MaxNewTokens = Annotated[int, typer.Option(help=f"tokens per sample at most [{DEFAULTS.max_new_tokens}]")]
Seed = Annotated[int, typer.Option(help="base of every per-example seed")]


def student_or_default(model: Path | None, doing: str) -> Path:
    """``--model``, else the bootstrap student (the shipped artifact, unpacked into var/cache): the one
    default of every command that samples a student offline (score, calibrate)."""
    if model is not None:
        return model
    import contextlib
    import sys

    from settle.trainer.student.bootstrap import bootstrap_student

    with contextlib.redirect_stdout(sys.stderr):
        model = bootstrap_student(Path("var/cache"))
    err.print(f"no --model given: {doing} with the bootstrap student {model}", markup=False)
    return model


def load_student(model: Path):  # type: ignore[no-untyped-def]
    from settle.streams.contracts.student_dir import ModelDirError
    from settle.streams.runtime.student import OnnxStudent

    try:
        return OnnxStudent(model)
    except ModelDirError as exc:
        raise fail(str(exc)) from None
