"""Hold out an evaluation split by a keyed hash of a grouping key (the session id by default).

Its own module because the held-out set must be stable across runs and processes (the gate
compares models on it, and it grows run after run) and must never straddle a session: an
example's near-twin from the same session in training would flatter the candidate. Pure: BLAKE2b,
no Python ``hash()``, no randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from settle.schemas.examples import SettledExample
from settle.trainer.data.records import E, as_settled

__all__ = ["eval_bucket", "split"]


def _split_key(example: SettledExample, by: str | Callable[[SettledExample], str]) -> str:
    if callable(by):
        return by(example)
    if by == "path_root":
        parts = [p for p in example.path.replace("\\", "/").split("/") if p]
        return parts[0] if parts else ""
    value = getattr(example, by)
    if not isinstance(value, str):
        raise TypeError(f"split key {by!r} is not a string field of SettledExample")
    return value


def eval_bucket(key: str, salt: str = "") -> float:
    """A stable uniform draw in [0, 1) for ``key``: the same in every process and Python version."""
    mac = hashlib.blake2b(salt.encode("utf-8")).digest()[:32] if salt else b""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=mac).digest()
    return int.from_bytes(digest, "big") / 2**64


def split(
    examples: Sequence[E],
    eval_fraction: float = 0.1,
    by: str | Callable[[SettledExample], str] = "session_id",
    *,
    salt: str = "",
) -> tuple[list[E], list[E]]:
    """``(train, eval)``: a group goes to eval when ``eval_bucket(key, salt) < eval_fraction``.

    ``by`` is a string field of SettledExample (``"session_id"``, ``"path"``,
    ...), ``"path_root"`` (first path component) or a function of the example.
    Whole groups move together, so eval holds about ``eval_fraction`` of the
    *groups*; the example fraction varies with group sizes. Input order is kept
    within each side. Growing the data never moves a group between sides;
    changing ``salt`` draws a different held-out set.
    """
    if not 0 <= eval_fraction <= 1:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    train: list[E] = []
    held: list[E] = []
    memo: dict[str, bool] = {}
    for item in examples:
        key = _split_key(as_settled(item), by)
        is_eval = memo.get(key)
        if is_eval is None:
            is_eval = memo[key] = eval_bucket(key, salt) < eval_fraction
        (held if is_eval else train).append(item)
    return train, held


