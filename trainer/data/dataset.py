"""The trainer's data: read `kept`, dedupe, split, render and tokenize.

Reading is at-least-once and commit-after-success: :func:`read_kept` consumes
`kept` with the trainer's own consumer group from its committed offsets and
never commits; :func:`commit_kept` commits the offsets a batch reports, and the
trainer calls it only after a run succeeded, so a crashed run reads the same
records again next time. Nothing is dropped without a count: undecodable
records come back with partition, offset and a reason, and are committed past
like the rest (they would never decode on a re-read either).

Everything after reading is a pure, deterministic function of its input
(no Python ``hash()``, no unseeded randomness), so two processes given the same
records build the same training set:

* :func:`dedupe`: exact by id (repeats of one id are byte-identical), then
  near-duplicates by MinHash over character shingles with LSH banding.
* :func:`split`: held-out set by a keyed hash of the session id, so examples of
  one session never straddle train and eval.
* :func:`render` / :func:`tokenize_pairs`: the prompt format of
  ``settle.streams.contracts.prompt`` (the one the scorer sampled on), labels masked to
  the target.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from settle.schemas.examples import SettledExample
from settle.schemas.scored import DEFAULT_MAX_CHARS, ScoredExample
from settle.streams.kafka.io import topic_partitions
from settle.streams.contracts.prompt import SPECIAL_TOKENS, render_prompt, render_target
from settle.streams.settings import KEPT, Settings

__all__ = [
    "IGNORE_INDEX",
    "POLICY",
    "KeptBatch",
    "UndecodableRecord",
    "InvalidTrainingRecord",
    "DedupeStats",
    "TrainingPair",
    "TokenizedPairs",
    "trainer_group_id",
    "decode_kept",
    "decode_example",
    "read_kept",
    "commit_kept",
    "load_jsonl",
    "dedupe",
    "minhash_signature",
    "lsh_params",
    "split",
    "eval_bucket",
    "render",
    "tokenize_pairs",
]

#: loss-ignored label, as in transformers / torch.nn.CrossEntropyLoss
IGNORE_INDEX: Final = -100

E = TypeVar("E", SettledExample, ScoredExample)


def _settled(item: SettledExample | ScoredExample) -> SettledExample:
    return item.example if isinstance(item, ScoredExample) else item


# --------------------------------------------------------------------------- decoding


class InvalidTrainingRecord(ValueError):
    """A value that is not a usable example; ``reason`` is a stable code for counting."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


_scored_dec = msgspec.json.Decoder(ScoredExample)
_settled_dec = msgspec.json.Decoder(SettledExample)


def _classify(raw: bytes, expect_scored: bool, exc: msgspec.DecodeError) -> InvalidTrainingRecord:
    try:
        generic = msgspec.json.decode(raw)
    except msgspec.DecodeError as inner:
        return InvalidTrainingRecord("malformed", f"not valid JSON: {inner}")
    if not isinstance(generic, dict):
        return InvalidTrainingRecord("not_an_object", f"expected an object, got {type(generic).__name__}")
    for obj in (generic, generic.get("example")):
        if isinstance(obj, dict) and obj.get("v", 1) != 1:
            return InvalidTrainingRecord("unsupported_version", f"schema version {obj.get('v')!r}, this reads 1")
    if expect_scored and "example" not in generic and "original_text" in generic:
        return InvalidTrainingRecord("not_scored", "a bare SettledExample where a ScoredExample was expected")
    return InvalidTrainingRecord("invalid_schema", str(exc))


def decode_kept(raw: bytes | None) -> ScoredExample:
    """One `kept` value (a JSON ScoredExample) or :class:`InvalidTrainingRecord`.

    A bare SettledExample on `kept` is rejected (``not_scored``): it never went
    through the band, so training on it would bypass the filter.
    """
    if not raw:
        raise InvalidTrainingRecord("empty", "no value (tombstone or empty record)")
    try:
        return _scored_dec.decode(raw)
    except msgspec.DecodeError as exc:
        raise _classify(raw, True, exc) from None


def decode_example(raw: bytes) -> SettledExample:
    """A JSON ScoredExample (its ``.example``) or a bare SettledExample, for offline files."""
    if not raw.strip():
        raise InvalidTrainingRecord("empty", "empty line")
    try:
        generic = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidTrainingRecord("malformed", f"not valid JSON: {exc}") from None
    scored = isinstance(generic, dict) and "example" in generic
    try:
        return _scored_dec.decode(raw).example if scored else _settled_dec.decode(raw)
    except msgspec.DecodeError as exc:
        raise _classify(raw, False, exc) from None


def load_jsonl(path: str | Path) -> list[SettledExample]:
    """Examples from a JSONL file of ScoredExample or SettledExample lines (mixed is fine).

    Blank lines are skipped; any other bad line raises ``InvalidTrainingRecord``
    naming the file and line (offline files are curated: a bad line is a bug to
    see, not a record to count).
    """
    out: list[SettledExample] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(decode_example(line))
            except InvalidTrainingRecord as exc:
                raise InvalidTrainingRecord(exc.reason, f"{path}:{lineno}: {exc.message}") from None
    return out


# --------------------------------------------------------------------------- reading `kept`


@dataclass(frozen=True)
class UndecodableRecord:
    partition: int
    offset: int
    key: bytes | None
    reason: str
    error: str
    value: bytes = b""


@dataclass
class KeptBatch:
    """What one :func:`read_kept` saw. Commit ``end_offsets`` only after training succeeded."""

    topic: str
    group_id: str
    #: decoded records in the order read: offset order within a partition (repeats included)
    scored: list[ScoredExample] = field(default_factory=list)
    undecodable: list[UndecodableRecord] = field(default_factory=list)
    #: {partition: first offset this read started from} for every partition of the topic
    start_offsets: dict[int, int] = field(default_factory=dict)
    #: {partition: offset after the last record read}, only partitions with records read
    end_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def examples(self) -> list[SettledExample]:
        return [s.example for s in self.scored]

    @property
    def records_read(self) -> int:
        return len(self.scored) + len(self.undecodable)

    @property
    def undecodable_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for u in self.undecodable:
            out[u.reason] = out.get(u.reason, 0) + 1
        return out


def trainer_group_id(settings: Settings, name: str = "trainer") -> str:
    """The trainer's consumer group, beside the stream's (``<group_prefix>-trainer``)."""
    return f"{settings.group_prefix}-{name}"


async def read_kept(
    settings: Settings,
    group_id: str,
    *,
    idle_s: float = 3.0,
    max_records: int | None = None,
    max_s: float = 600.0,
) -> KeptBatch:
    """Read `kept` from ``group_id``'s committed offsets (earliest where none) until idle.

    "Until idle" = no record for ``idle_s`` seconds (the embedded broker's end
    offsets are not trusted, see ``streams/kafka_io.py``), or ``max_records``
    records, or ``max_s`` seconds. Partitions are assigned manually (no group
    join, no rebalance); the group is used for its committed offsets only, and
    nothing is committed here: see :func:`commit_kept`.
    """
    name = settings.topic(KEPT)
    batch = KeptBatch(topic=name, group_id=group_id)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        tps = [TopicPartition(name, p) for p in await topic_partitions(consumer, name)]
        consumer.assign(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
            batch.start_offsets[tp.partition] = await consumer.position(tp)
        started = last = time.monotonic()
        while True:
            now = time.monotonic()
            left = None if max_records is None else max_records - batch.records_read
            if now - last > idle_s or now - started > max_s or (left is not None and left <= 0):
                break
            got = await consumer.getmany(timeout_ms=200, max_records=left or 5000)
            for tp in sorted(got, key=lambda t: t.partition):
                for m in got[tp]:
                    last = time.monotonic()
                    try:
                        batch.scored.append(decode_kept(m.value))
                    except InvalidTrainingRecord as exc:
                        batch.undecodable.append(
                            UndecodableRecord(tp.partition, m.offset, m.key, exc.reason, exc.message, m.value or b"")
                        )
                    batch.end_offsets[tp.partition] = m.offset + 1
    finally:
        await consumer.stop()
    return batch


async def commit_kept(settings: Settings, group_id: str, offsets: Mapping[int, int]) -> None:
    """Commit ``{partition: next_offset}`` on `kept` for ``group_id`` (e.g. ``batch.end_offsets``)."""
    if not offsets:
        return
    if any(o < 0 for o in offsets.values()):
        raise ValueError(f"negative offset in {dict(offsets)}")
    name = settings.topic(KEPT)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        await consumer.start()
        tps = {TopicPartition(name, p): o for p, o in sorted(offsets.items())}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- dedupe

_M64: Final = np.uint64(0xFFFFFFFFFFFFFFFF)
_SHINGLE_BASE: Final = np.uint64(0x100000001B3)  # FNV prime: any odd 64-bit constant works


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads polynomial shingle hashes over all 64 bits."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _shingle_hashes(text: str, k: int) -> np.ndarray:
    """Distinct 64-bit hashes of the k-code-point shingles of ``text`` (the whole text when shorter)."""
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
    if len(cps) < k:
        cps = np.concatenate([cps, np.full(k - len(cps), 0x110000, dtype=np.uint64)])  # pad: not a code point
    windows = np.lib.stride_tricks.sliding_window_view(cps, k)
    powers = np.ones(k, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(k - 2, -1, -1):
            powers[i] = powers[i + 1] * _SHINGLE_BASE
        h = (windows * powers).sum(axis=1, dtype=np.uint64)
    return np.unique(_mix64(h))


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signature(
    text: str, *, num_perm: int = 128, shingle: int = 5, seed: int = 1, _perms: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """MinHash of ``text``'s character shingles: ``num_perm`` uint64 values.

    Each "permutation" is ``x -> a*x + b mod 2**64`` (``a`` odd, so a bijection)
    over mixed shingle hashes; two signatures agree in a position with
    probability ~ the Jaccard similarity of the shingle sets.
    """
    a, b = _perms if _perms is not None else _permutations(num_perm, seed)
    h = _shingle_hashes(text, shingle)
    sig = np.full(len(a), _M64, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(0, len(h), 4096):  # bounds the (shingles x perms) temporary
            chunk = h[i : i + 4096, None] * a[None, :] + b[None, :]
            np.minimum(sig, chunk.min(axis=0), out=sig)
    return sig


def _dedupe_text(example: SettledExample) -> str:
    # A separator no region contains in practice keeps shingles from spanning the two texts.
    return example.original_text + "\x1e" + example.settled_text


def lsh_params(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """``(bands, rows)``: the most rows per band (fewest spurious candidates) such that a
    pair at exactly ``threshold`` Jaccard is still proposed with probability >= ``recall``."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands < recall:
            break
        best = (bands, rows)
    return best


@dataclass
class DedupeStats:
    input: int = 0
    #: repeats of an id already seen (the stream is at-least-once)
    exact_duplicates: int = 0
    #: repeats whose SettledExample differed from the first one of that id (should be 0; first kept)
    id_conflicts: int = 0
    near_duplicates: int = 0
    kept: int = 0
    #: (dropped id, kept id it duplicates, estimated Jaccard)
    near_pairs: list[tuple[str, str, float]] = field(default_factory=list)


def dedupe(
    examples: Iterable[E],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    bands: int | None = None,
    shingle: int = 5,
    seed: int = 1,
) -> tuple[list[E], DedupeStats]:
    """Drop exact repeats by id, then near-duplicates; returns survivors sorted by id.

    Exact: the first occurrence of an id (in input order) is kept. A later one
    that differs in its SettledExample is counted in ``id_conflicts`` (a
    ScoredExample rescored by another model version repeats the same example
    with other samples; that is an exact duplicate, not a conflict).

    Near: MinHash of 5-code-point shingles of ``original_text + settled_text``;
    LSH banding proposes candidates and a candidate is a duplicate when the
    fraction of equal signature positions (all ``num_perm``) is >= ``threshold``.
    ``bands=None`` picks the banding from the threshold (:func:`lsh_params`:
    at 0.8 and 128 permutations, 21 bands of 6 rows: a pair at Jaccard 0.8 is
    proposed with p ~ 0.998, one at 0.2 with p ~ 0.001). Examples are visited
    in id order and compared only with those kept so far, so the kept one of a
    near-duplicate group is the smallest id, whatever the input order.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if bands is None:
        bands, rows = lsh_params(threshold, num_perm)
    else:
        rows = num_perm // bands if bands >= 1 else 0
    if rows < 1:
        raise ValueError(f"need 1 <= bands <= num_perm, got bands={bands}, num_perm={num_perm}")
    stats = DedupeStats()
    first: dict[str, E] = {}
    for item in examples:
        stats.input += 1
        ex = _settled(item)
        seen = first.get(ex.id)
        if seen is None:
            first[ex.id] = item
            continue
        stats.exact_duplicates += 1
        if _settled(seen) != ex:
            stats.id_conflicts += 1

    perms = _permutations(num_perm, seed)
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    kept: list[E] = []
    sigs: list[np.ndarray] = []
    for id_ in sorted(first):
        item = first[id_]
        sig = minhash_signature(_dedupe_text(_settled(item)), shingle=shingle, _perms=perms)
        keys = [sig[j * rows : (j + 1) * rows].tobytes() for j in range(bands)]
        candidates: set[int] = set()
        for j, key in enumerate(keys):
            candidates.update(buckets[j].get(key, ()))
        best: tuple[float, int] | None = None
        for c in sorted(candidates):
            sim = float(np.count_nonzero(sigs[c] == sig)) / num_perm
            if sim >= threshold and (best is None or sim > best[0]):
                best = (sim, c)
        if best is not None:
            stats.near_duplicates += 1
            stats.near_pairs.append((id_, _settled(kept[best[1]]).id, best[0]))
            continue
        index = len(kept)
        kept.append(item)
        sigs.append(sig)
        for j, key in enumerate(keys):
            buckets[j].setdefault(key, []).append(index)
    stats.kept = len(kept)
    return kept, stats


# --------------------------------------------------------------------------- split


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
        key = _split_key(_settled(item), by)
        is_eval = memo.get(key)
        if is_eval is None:
            is_eval = memo[key] = eval_bucket(key, salt) < eval_fraction
        (held if is_eval else train).append(item)
    return train, held


# --------------------------------------------------------------------------- render and tokenize


@dataclass(frozen=True)
class TrainingPair:
    """``prompt + target`` is the training text; the loss covers only ``target``."""

    prompt: str
    target: str
    id: str = ""


class _PolicyBudget:
    def __repr__(self) -> str:
        return "POLICY"


#: ``render(max_chars=POLICY)``: a ScoredExample's own ``policy.max_prompt_chars`` (the
#: budget the scorer sampled with), else ``DEFAULT_MAX_CHARS``.
POLICY: Final = _PolicyBudget()


def render(example: SettledExample | ScoredExample, *, max_chars: int | None | _PolicyBudget = POLICY) -> TrainingPair:
    """The training pair of one example; raises ``UnrenderableExample`` like the scorer would.

    By default a ScoredExample is rendered with the prompt budget recorded in
    its decision, so the student is trained on exactly the prompt it was scored on.
    """
    settled = _settled(example)
    if isinstance(max_chars, _PolicyBudget):
        scored = isinstance(example, ScoredExample)
        max_chars = example.decision.policy.max_prompt_chars if scored else DEFAULT_MAX_CHARS
    return TrainingPair(render_prompt(settled, max_chars=max_chars), render_target(settled), settled.id)


class TokenizedPairs(list):  # list[dict[str, list[int]]]
    """The tokenized rows, plus what did not fit.

    ``skipped``: indices (into the input pairs) whose target alone did not fit;
    ``truncated``: indices whose prompt lost tokens on the left.
    """

    skipped: list[int]
    truncated: list[int]

    def __init__(self, rows: Iterable[dict[str, list[int]]] = (), skipped: list[int] | None = None,
                 truncated: list[int] | None = None) -> None:
        super().__init__(rows)
        self.skipped = skipped or []
        self.truncated = truncated or []


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    if hasattr(tokenizer, "encode_batch") and not callable(getattr(tokenizer, "convert_tokens_to_ids", None)):
        # a raw `tokenizers.Tokenizer`
        return [list(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _check_special_tokens(tokenizer: Any) -> None:
    ids = _encode_batch(tokenizer, list(SPECIAL_TOKENS))
    bad = [t for t, i in zip(SPECIAL_TOKENS, ids) if len(i) != 1]
    if bad:
        raise ValueError(f"tokenizer splits prompt markers {bad}: they must be single (added) tokens")


def tokenize_pairs(
    pairs: Sequence[TrainingPair],
    tokenizer: Any,
    max_tokens: int,
    *,
    min_prompt_tokens: int = 1,
) -> TokenizedPairs:
    """Rows of ``input_ids``, ``labels`` (``-100`` on every prompt position) and ``attention_mask``.

    Prompt and target are tokenized apart and concatenated; this equals
    tokenizing the joined text because the prompt ends in a special token, a
    hard boundary for the tokenizer. When a row exceeds ``max_tokens`` the
    prompt loses tokens from the left (the oldest context; the region markers
    sit at its end), never the target. A pair whose target leaves fewer than
    ``min_prompt_tokens`` prompt tokens is skipped (index in ``.skipped``): with
    no prompt token at all the first target token is never predicted.
    ``tokenizer`` is a ``PreTrainedTokenizerFast`` or a ``tokenizers.Tokenizer``
    in which every ``SPECIAL_TOKENS`` string is one token (checked).
    """
    if max_tokens < 1 or min_prompt_tokens < 0:
        raise ValueError(f"need max_tokens >= 1 and min_prompt_tokens >= 0, got {max_tokens}, {min_prompt_tokens}")
    _check_special_tokens(tokenizer)
    prompts = _encode_batch(tokenizer, [p.prompt for p in pairs])
    targets = _encode_batch(tokenizer, [p.target for p in pairs])
    out = TokenizedPairs()
    for i, (p, t) in enumerate(zip(prompts, targets)):
        room = max_tokens - len(t)
        if not t or room < min_prompt_tokens:
            out.skipped.append(i)
            continue
        if len(p) > room:
            p = p[len(p) - room :] if room > 0 else []
            out.truncated.append(i)
        ids = p + t
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * len(p) + t, "attention_mask": [1] * len(ids)})
    return out
