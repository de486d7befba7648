"""The scoring agent's logic without Kafka: raw `settled` records in, `scored`/`kept`/`dead-letter` out.

The Faust agent hands a batch of consumed records here and produces what comes
back, as the settle agent does with PartitionSettler. Undecodable records become
dead letters with a reason; an example id already scored by this worker (an
upstream restart re-emits byte-identical examples) is skipped, with bounded memory;
everything else is scored in one ``score_batch`` call and routed by its decision.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from settle.schemas.codecs import InvalidRecord, decode_settled, encode
from settle.schemas.examples import SettledExample
from settle.schemas.scored import ScoredExample
from settle.streams.records import Consumed, Output, dead_letter
from settle.streams.scoring.score import SampleSource, ScoringConfig, score_batch


@dataclass
class BatchResult:
    outputs: list[Output]
    scored: list[ScoredExample]
    #: records skipped as repeats of an id this worker already scored
    repeats: int = 0


@dataclass
class BatchScorer:
    """Decode, dead-letter, dedupe, score and route one batch of `settled` records."""

    config: ScoringConfig
    agent: str = "score"
    #: ids remembered for dedupe (oldest forgotten first)
    remember: int = 100_000
    dead_letters: Counter[str] = field(default_factory=Counter, init=False)
    decisions: Counter[str] = field(default_factory=Counter, init=False)
    _recent: OrderedDict[str, None] = field(default_factory=OrderedDict, init=False, repr=False)

    def handle(self, records: Sequence[Consumed], source: SampleSource) -> BatchResult:
        """Outputs in input order (dead letters where their record was); scored examples in input order."""
        outputs: list[Output] = []
        examples: list[SettledExample] = []
        repeats = 0
        in_batch: set[str] = set()
        for record in records:
            try:
                example = decode_settled(record.value)
            except InvalidRecord as exc:  # the shared classifier's reason (malformed, invalid_utf8, ...)
                self.dead_letters[exc.reason] += 1
                outputs.append(dead_letter(record, exc.reason, exc.message, self.agent))
                continue
            if example.id in self._recent or example.id in in_batch:
                repeats += 1
                continue
            in_batch.add(example.id)
            examples.append(example)
        scored = score_batch(examples, source, self.config) if examples else []
        for s in scored:
            self._remember(s.id)
            self.decisions[s.decision.decision] += 1
            key, value = s.id.encode(), encode(s)
            outputs.append(Output("scored", key, value))
            if s.decision.decision == "keep":
                outputs.append(Output("kept", key, value))
        return BatchResult(outputs, scored, repeats)

    def _remember(self, example_id: str) -> None:
        self._recent[example_id] = None
        while len(self._recent) > self.remember:
            self._recent.popitem(last=False)
