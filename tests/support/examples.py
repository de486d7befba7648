"""Hand-made settled and scored examples for trainer tests: one definition, many test files."""

from __future__ import annotations

from settle.schemas.events import PromptContext
from settle.schemas.examples import SettledExample
from settle.schemas.scored import BandPolicy, Decision, ScoredExample


def make(
    id_: str,
    original: str = "x = 1\n",
    settled: str = "x = 2\n",
    *,
    session: str = "s",
    path: str = "a.py",
    cursor: int = 0,
    context: PromptContext = PromptContext(),
) -> SettledExample:
    """A settled example with only what a trainer test varies."""
    return SettledExample(
        id=id_, request_id=f"r-{id_}", session_id=session, path=path, encoding="utf-16",
        requested_at_ms=0, settled_at_ms=1, original_text=original, settled_text=settled,
        cursor=cursor, context=context,
    )


def scored(example: SettledExample, policy: BandPolicy = BandPolicy()) -> ScoredExample:
    """``example`` as the scorer would put it on `kept`."""
    decision = Decision(decision="keep", reason="test", samples_used=4, solved=1, solve_rate=0.25, policy=policy)
    return ScoredExample(id=example.id, example=example, decision=decision, samples=["x"], model_version="m1")
