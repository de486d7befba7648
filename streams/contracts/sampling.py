"""One recorded set of sampling settings, read by the scorer, the CLI, the benches and the trainer's evaluation.

Every ScoredExample records these values, so a decision can be repeated exactly:
the samples of an example depend only on (model version, these settings, example
id, round), never on the batch it was scored in.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings, applied in transformers' warper order: temperature, then top-k, then top-p.

    Raises ValueError on construction for values no sampler can honour.
    """

    #: softmax temperature; 0 = greedy
    temperature: float = 0.8
    #: keep each step's top_k tokens before top-p (0 = the whole vocabulary); transformers' default
    top_k: int = 50
    #: nucleus mass in (0, 1]
    top_p: float = 0.95
    #: tokens generated at most per sample
    max_new_tokens: int = 128
    #: base of every per-example seed (see ``example_seed``)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: the whole vocabulary), not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {self.max_new_tokens}")

    def example_seed(self, example_id: str, round_index: int) -> int:
        """Per-example, per-round seed (63 bits of blake2b): the same example draws the same samples in any batch."""
        return example_seed(self.seed, example_id, round_index)

    def decoding(self) -> dict[str, Any]:
        """The keyword arguments of a sample source's ``draw`` (everything but the seed)."""
        out = asdict(self)
        del out["seed"]
        return out


def example_seed(base: int, example_id: str, round_index: int) -> int:
    """The seed rule: blake2b-64 of (base, example id, round), shifted to a non-negative int63."""
    digest = hashlib.blake2b(f"{base}\x1f{example_id}\x1f{round_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1
