"""Dedupe training examples: exact repeats by id, then near-duplicates by MinHash LSH (datasketch).

Its own module because the stream is at-least-once (the same id arrives more than once) and
editors produce many near-identical edits; without this the student would be trained several
times on one example and the held-out set would leak into training. MinHash and LSH banding are
``datasketch``'s (``MinHash``, ``MinHashLSH``); what is ours is the policy: what text is shingled,
which banding, and which example of a near-duplicate group survives (the smallest id, whatever
the input order). Pure and deterministic: fixed seed, SHA-1 shingle hashes, no Python ``hash()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

from settle.schemas.examples import SettledExample
from settle.trainer.data.records import E, as_settled

__all__ = ["DedupeStats", "dedupe", "lsh_params", "minhash"]

#: datasketch's permutation scheme, pinned so a datasketch upgrade cannot change which examples survive
_SCHEME = "affine64"


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


def lsh_params(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """``(bands, rows)``: the most rows per band (fewest spurious candidates) such that a
    pair at exactly ``threshold`` Jaccard is still proposed with probability >= ``recall``.

    Passed to ``MinHashLSH(params=...)`` instead of its own choice (which weighs false
    positives and negatives equally), because a missed near-duplicate costs us more.
    """
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands < recall:
            break
        best = (bands, rows)
    return best


def _shingles(text: str, k: int) -> list[bytes]:
    """The k-code-point shingles of ``text`` as UTF-8 (the whole text when it is shorter)."""
    grams = [text[i : i + k] for i in range(len(text) - k + 1)] or [text]
    return [g.encode("utf-8", "surrogatepass") for g in grams]


def minhash(text: str, *, num_perm: int = 128, shingle: int = 5, seed: int = 1) -> MinHash:
    """datasketch ``MinHash`` of ``text``'s character shingles; ``a.jaccard(b)`` estimates the
    Jaccard similarity of the two shingle sets."""
    m = MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME)
    m.update_batch(_shingles(text, shingle))
    return m


def _dedupe_text(example: SettledExample) -> str:
    # A separator no region contains in practice keeps shingles from spanning the two texts.
    return example.original_text + "\x1e" + example.settled_text


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
        ex = as_settled(item)
        seen = first.get(ex.id)
        if seen is None:
            first[ex.id] = item
            continue
        stats.exact_duplicates += 1
        if as_settled(seen) != ex:
            stats.id_conflicts += 1

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
    kept: list[E] = []
    sigs: list[MinHash] = []
    for id_ in sorted(first):
        item = first[id_]
        sig = minhash(_dedupe_text(as_settled(item)), num_perm=num_perm, shingle=shingle, seed=seed)
        best: tuple[float, int] | None = None
        for c in sorted(lsh.query(sig)):
            sim = sigs[c].jaccard(sig)
            if sim >= threshold and (best is None or sim > best[0]):
                best = (sim, c)
        if best is not None:
            stats.near_duplicates += 1
            stats.near_pairs.append((id_, as_settled(kept[best[1]]).id, best[0]))
            continue
        lsh.insert(len(kept), sig)
        kept.append(item)
        sigs.append(sig)
    stats.kept = len(kept)
    return kept, stats
