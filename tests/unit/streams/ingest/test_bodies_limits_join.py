"""The pure parts of the ingest endpoint: bodies, tokens, rate limits, the request/report join."""

from __future__ import annotations

import gzip

import pytest
import zstandard

from settle.schemas.events import PredictionRequested, Span
from settle.streams.ingest.bodies import BodyError, content_coding, decompress, split_values
from settle.streams.ingest.join import RequestJoin
from settle.streams.ingest.limits import TokenBucket, client_of, parse_tokens


def test_json_lines_keep_line_numbers_and_skip_blanks() -> None:
    items = split_values(b'{"a":1}\r\n\n  \n{"b":2}\n')
    assert [(i.position, i.raw) for i in items] == [(1, b'{"a":1}'), (4, b'{"b":2}')]


def test_array_elements_keep_their_exact_bytes() -> None:
    items = split_values(b' [ {"a": 1},\n{"b" :2} ,3]')
    assert [(i.position, i.raw) for i in items] == [(1, b'{"a": 1}'), (2, b'{"b" :2}'), (3, b"3")]
    with pytest.raises(BodyError) as exc:
        split_values(b'[{"a":1}, ')
    assert exc.value.status == 400


@pytest.mark.parametrize(("bom", "reason"), [(b"\xef\xbb\xbf", "byte_order_mark"), (b"\xff\xfe", "invalid_utf8")])
def test_a_byte_order_mark_is_refused_with_the_decoders_reason_not_stripped(bom: bytes, reason: str) -> None:
    """JSON is UTF-8 without a BOM, in a body as on `edits` (the body's BOM was stripped before: accepted)."""
    from settle.schemas.codecs import InvalidRecord, decode_event

    line = b'{"kind": "tick", "time_ms": 1}'
    items = split_values(bom + line + b"\n" + line + b"\n" + bom + line)
    assert [(i.position, i.raw) for i in items] == [(1, bom + line), (2, line), (3, bom + line)]
    for item in (items[0], items[2]):
        with pytest.raises(InvalidRecord) as info:
            decode_event(item.raw)
        assert info.value.reason == reason
    with pytest.raises(BodyError) as exc:
        split_values(bom + b"[" + line + b"]")
    assert (exc.value.status, exc.value.reason) == (400, reason) and "byte order mark" in exc.value.message


def test_gzip_and_zstd_by_header_or_magic_and_bounded() -> None:
    data = b'{"x":1}\n' * 1000
    assert decompress(gzip.compress(data), "gzip", 10_000) == data
    assert decompress(zstandard.ZstdCompressor().compress(data), "zstd", 10_000) == data
    assert decompress(zstandard.ZstdCompressor().compress(data), None, 10_000) == data  # sniffed
    assert content_coding(None, b"{}") == "identity"
    with pytest.raises(BodyError) as exc:
        decompress(zstandard.ZstdCompressor().compress(b"0" * 1_000_000), "zstd", 10_000)
    assert exc.value.status == 413  # a bomb stops at the limit
    with pytest.raises(BodyError) as exc:
        decompress(b"not gzip", "gzip", 100)
    assert exc.value.reason == "bad_compression"
    with pytest.raises(BodyError) as exc:
        decompress(b"x", "br", 100)
    assert exc.value.status == 415


def test_tokens_per_client() -> None:
    tokens = parse_tokens("zed:s3cret, vim:other\n# comment\n")
    assert tokens == {"s3cret": "zed", "other": "vim"}
    assert client_of("Bearer s3cret", tokens) == "zed"
    assert client_of("bearer other", tokens) == "vim"
    assert client_of("Bearer wrong", tokens) is None
    assert client_of("Basic s3cret", tokens) is None
    assert client_of(None, tokens) is None
    with pytest.raises(ValueError):
        parse_tokens("zed")
    with pytest.raises(ValueError):
        parse_tokens("a:t,b:t")


def test_token_bucket_per_client() -> None:
    bucket = TokenBucket(rate=10, burst=20)
    assert bucket.take("a", 20, now_s=0.0) == 0.0
    assert bucket.take("a", 5, now_s=0.0) == pytest.approx(0.5)  # 5 more need half a second
    assert bucket.take("b", 20, now_s=0.0) == 0.0  # another client has its own bucket
    assert bucket.take("a", 5, now_s=0.5) == 0.0
    assert bucket.take("a", 50, now_s=100.0) == pytest.approx(2.0)  # above the burst: never at once


def _request(rid: str, t: int = 0) -> PredictionRequested:
    return PredictionRequested(time_ms=t, session_id="s", path="a.py", consent=True, request_id=rid,
                               region=Span(0, 1), region_text="a", cursor=0)


def test_join_is_bounded_in_count_and_age_and_counts_what_is_unmatched() -> None:
    join = RequestJoin(max_entries=2, max_age_ms=1000)
    assert join.remember(_request("r1"), 0)
    assert not join.remember(_request("r1"), 1)  # redelivered while waiting: the first stays
    join.remember(_request("r2"), 10)
    join.remember(_request("r3"), 20)  # r1 pushed out
    assert join.take("r1", 30) is None
    assert join.take("r2", 30).request_id == "r2"
    assert join.take("r3", 2000) is None  # aged out
    s = join.stats
    assert (s.remembered, s.duplicates, s.evicted, s.matched, s.unmatched_reports, s.expired) == (3, 1, 1, 1, 2, 1)
    assert len(join) == 0
    r = _request("r4")
    join.remember(r, 3000)
    taken = join.take("r4", 3001)
    join.put_back(taken, 3001)  # its report could not be delivered: a retry still joins
    assert join.take("r4", 3002) is r
