"""The status page renderer: diffs, the band histogram's counts and thresholds, an empty page."""

from __future__ import annotations

import re

from settle.streams.status.render import StatusData, diff_html, page


def test_diff_marks_deletions_and_insertions_and_escapes() -> None:
    assert diff_html("a <b> c", "a <i> c") == "a &lt;<del>b</del><ins>i</ins>&gt; c"
    assert diff_html("same", "same") == "same"


def test_an_empty_deployment_renders_every_section() -> None:
    html = page(StatusData(), "settle.")
    for section in ("Band", "Recent decisions", "Partitions", "Model versions", "kept rate"):
        assert section in html
    assert re.search(r'id="scored-total"><b>0<', html) and "nothing published yet" in html


def test_broker_problems_are_a_banner_not_an_empty_page() -> None:
    assert 'id="broker-errors"' not in page(StatusData(), "settle.")
    html = page(StatusData(broker_errors=["cannot reach the Kafka broker at h:1: <refused>",
                                          "topic 'settle.models' does not exist on the broker at h:1 (yet)"]))
    assert re.search(r'id="broker-errors" data-count="2"', html)
    assert "cannot reach the Kafka broker at h:1: &lt;refused&gt;" in html and "settle.models" in html
    assert html.index('id="broker-errors"') < html.index('id="scored-total"')  # above the figures it qualifies
