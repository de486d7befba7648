"""Safe to keep: excluded files never settle, planted secrets never leave, caps bound a source.

The secrets below are fake values in the shape of real ones, assembled at run time so the
source file itself holds no secret-shaped string.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settle.schemas.codecs import encode
from settle.schemas.events import (
    BufferEdited,
    Diagnostic,
    EditStep,
    Excerpt,
    PredictionRequested,
    PromptContext,
    Replacement,
    Span,
    Tick,
)
from settle.schemas.examples import SettledExample
from settle.streams.contracts.prompt import render_prompt, render_target
from settle.streams.settling.partition import PartitionSettler
from settle.streams.settling.reference import settle_records
from settle.streams.settling.safety import (
    DEFAULT_EXCLUDED_GLOBS,
    Safe,
    Safety,
    SafetyPolicy,
    Unsafe,
    find_secrets,
    is_excluded,
    make_safe,
    source_keys,
)
from settle.streams.settling.tracker import TrackerConfig
from tests.support.secrets import PLANTED


def _example(text: str, *, path: str = "src/app/config.py", cursor: int = 0, **ctx: object) -> SettledExample:
    return SettledExample(
        id="x1", request_id="r1", session_id="s1", path=path, encoding="utf-32",
        requested_at_ms=1_000, settled_at_ms=20_000, original_text=text, settled_text=text + "\n# done\n",
        cursor=cursor, context=PromptContext(**ctx),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_each_kind_is_found_with_its_type(kind: str) -> None:
    secret, line = PLANTED[kind]
    text = "def f(x):\n    return x + 1\n" + line.format(secret) + "\nprint('done')\n"
    spans = find_secrets(text, "src/app/config.py")
    assert [text[s:e] for s, e, _ in spans if secret in text[s:e] or text[s:e] in secret]
    assert any(k == kind for _, _, k in spans), spans


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_a_planted_secret_leaves_no_field(kind: str) -> None:
    secret, line = PLANTED[kind]
    code = f"import os\n{line.format(secret)}\nx = 1\n"
    ex = SettledExample(
        id="x1", request_id="r1", session_id="s1", path="src/app/config.py", encoding="utf-32",
        requested_at_ms=1_000, settled_at_ms=20_000, original_text=code, settled_text=code + "y = 2\n",
        cursor=len(code), production_prediction=code + "z = 3\n",
        context=PromptContext(
            edit_history=[EditStep(path="src/app/config.py", old_text="", new_text=line.format(secret))],
            excerpt=Excerpt(path="src/app/config.py", text="# top\n" + code + "# bottom\n"),
            related=[Excerpt(path="src/app/other.py", text=f"# other\n{line.format(secret)}\n")],
            diagnostics=[Diagnostic(message=f"unused value {line.format(secret)}")],
        ),
    )
    verdict = make_safe(ex)
    assert isinstance(verdict, Safe)
    raw = encode(verdict.example).decode()
    for piece in secret.split("\n"):
        if len(piece) >= 8 and "PRIVATE KEY" not in piece:
            assert piece not in raw
    assert f"<secret:{kind}>" in verdict.example.original_text
    assert verdict.scrubbed.get(kind, 0) >= 7  # every field that held it
    # the prompt keeps the placeholder whole, and the region still sits in its excerpt
    prompt = render_prompt(verdict.example, max_chars=None)
    assert f"<secret:{kind}>" in prompt and secret not in prompt
    assert verdict.example.original_text in verdict.example.context.excerpt.text  # type: ignore[union-attr]
    assert secret not in render_target(verdict.example)
    # scrubbing is idempotent: a scrubbed example is already safe
    again = make_safe(verdict.example)
    assert isinstance(again, Safe) and again.example == verdict.example and not again.scrubbed


@pytest.mark.parametrize("line", [
    "        self.tokenizer = self.sampler.tokenizer\n",
    "    api_key_source = settings.api_key_provider\n",
    "auth_header_name = authorization_header\n",
    "    token_count = len(self.tokenizer.encode(text))\n",
])
def test_code_that_assigns_to_a_secret_sounding_name_is_not_a_secret(line: str) -> None:
    """An attribute path or identifier on the right of ``token = ...`` is code, not a key (seen on real history)."""
    ex = _example("def f(self):\n" + line, cursor=3)
    verdict = make_safe(ex)
    assert isinstance(verdict, Safe) and verdict.scrubbed == {} and verdict.example is ex


def test_a_clean_example_comes_back_unchanged() -> None:
    ex = _example("def add(a, b):\n    return a + b  # sum of two\n", cursor=5,
                  excerpt=Excerpt(path="src/app/config.py", text="x = 'hello world'\n"))
    verdict = make_safe(ex)
    assert isinstance(verdict, Safe) and verdict.example is ex and verdict.scrubbed == {}


def test_the_cursor_moves_with_the_text_and_never_lands_inside_a_placeholder() -> None:
    secret = PLANTED["github_token"][0]
    text = f"a = {secret}\nb = 2\n"
    after = text.index("b")
    inside = text.index(secret) + 5
    for cursor, expect_after in ((after, "b = 2\n"), (inside, "\nb = 2\n"), (0, text.replace(secret, "<secret:github_token>"))):
        verdict = make_safe(_example(text, cursor=cursor))
        assert isinstance(verdict, Safe)
        out = verdict.example
        assert out.original_text == text.replace(secret, "<secret:github_token>")
        assert out.original_text[out.cursor:] == expect_after


@pytest.mark.parametrize(
    "path",
    [".env", "app/.env.production", "/home/alice/p/server.pem", "certs/site.crt", "deploy/tls.key",
     "config/secrets.yml", "a/b/.dev.vars", "proj/.zed/settings.json", "/home/alice/.config/zed/keymap.json",
     "infra/credentials.json", "home/.ssh/id_rsa", "C:\\Users\\bob\\.env", "APP/.ENV"],
)
def test_excluded_paths_are_dropped(path: str) -> None:
    assert is_excluded(path)
    verdict = make_safe(_example("x = 1\n", path=path))
    assert isinstance(verdict, Unsafe) and verdict.reason == "excluded_path"


@pytest.mark.parametrize("path", ["src/main.py", "environment.py", "docs/keys.md", "src/keyboard.rs", "zed/src/settings.rs"])
def test_ordinary_paths_are_kept(path: str) -> None:
    assert not is_excluded(path)


def test_globs_are_configurable_and_added_to_zeds() -> None:
    policy = SafetyPolicy(excluded_globs=DEFAULT_EXCLUDED_GLOBS + ("private/**", "**/*.secret"))
    assert isinstance(make_safe(_example("x\n", path="private/notes/a.py"), policy), Unsafe)
    assert isinstance(make_safe(_example("x\n", path="src/a.secret"), policy), Unsafe)
    assert isinstance(make_safe(_example("x\n", path="src/.env"), policy), Unsafe)
    assert isinstance(make_safe(_example("x\n", path="src/a.py"), policy), Safe)


def test_settings_carry_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from settle.streams.settings import Settings

    monkeypatch.setenv("SETTLE_EXCLUDED_GLOBS", "private/**, **/*.secret")
    monkeypatch.setenv("SETTLE_MAX_PER_SESSION", "7")
    policy = Settings.from_env().safety
    assert policy.excluded_globs[-2:] == ("private/**", "**/*.secret")
    assert set(DEFAULT_EXCLUDED_GLOBS) <= set(policy.excluded_globs)
    assert policy.max_per_session == 7


def test_context_from_an_excluded_file_is_removed() -> None:
    ex = _example(
        "x = 1\n",
        edit_history=[EditStep(path=".env", old_text="", new_text="TOKEN=abc\n"),
                      EditStep(path="src/a.py", old_text="", new_text="y = 2\n")],
        related=[Excerpt(path="deploy/tls.key", text="whatever\n"), Excerpt(path="src/b.py", text="z\n")],
    )
    verdict = make_safe(ex)
    assert isinstance(verdict, Safe) and verdict.excluded_context == 2
    assert [s.path for s in verdict.example.context.edit_history] == ["src/a.py"]
    assert [e.path for e in verdict.example.context.related] == ["src/b.py"]


def test_caps_bound_one_session_and_one_repository() -> None:
    safety = Safety(SafetyPolicy(max_per_session=3, max_per_repository=5, cap_window_ms=60_000))

    def ex(i: int, session: str, path: str, t: int = 1_000) -> SettledExample:
        return SettledExample(
            id=f"e{i}", request_id=f"r{i}", session_id=session, path=path, encoding="utf-32",
            requested_at_ms=t, settled_at_ms=t, original_text="a\n", settled_text="b\n", cursor=0,
            context=PromptContext(),
        )

    kept = [safety.apply(ex(i, "noisy", "repo1/a.py")) for i in range(10)]
    assert sum(k is not None for k in kept) == 3 and safety.dropped["session_cap"] == 7
    kept = [safety.apply(ex(100 + i, f"user{i}", "repo1/b.py")) for i in range(10)]
    assert sum(k is not None for k in kept) == 2 and safety.dropped["repository_cap"] == 8
    # a new window starts the counts afresh
    assert safety.apply(ex(999, "noisy", "repo1/a.py", t=61_000)) is not None


def test_cap_memory_is_bounded() -> None:
    safety = Safety(SafetyPolicy(max_per_session=1, max_per_repository=1, max_sources=10))
    for i in range(1000):
        safety.apply(SettledExample(
            id=f"e{i}", request_id="r", session_id=f"s{i}", path=f"r{i}/a.py", encoding="utf-32",
            requested_at_ms=0, settled_at_ms=0, original_text="", settled_text="", cursor=0, context=PromptContext(),
        ))
    assert len(safety._counts) <= 10


def test_repository_key() -> None:
    base = _example("x\n")
    assert source_keys(base) == ("s1", "src")
    from msgspec import structs

    assert source_keys(structs.replace(base, path="/home/alice/proj/src/a.py"))[1] == "/home/alice/proj"
    assert source_keys(structs.replace(base, session_id="zed:https://github.com/o/r@abc"))[1] == "https://github.com/o/r"


# -- the hook in every place that creates a settled example ------------------------------


def _events(path: str, text: str, secret_line: str) -> list[bytes]:
    region = f"{secret_line}\nvalue = 1\n"
    req = PredictionRequested(
        time_ms=1_000, session_id="s1", path=path, consent=True, encoding="utf-32", request_id="r1",
        region=Span(start=len(text), end=len(text) + len(region)), region_text=region, cursor=len(text),
        context=PromptContext(excerpt=Excerpt(path=path, text=text + region)),
        production_prediction=region.replace("1", "2"),
    )
    edit = BufferEdited(time_ms=2_000, session_id="s1", path=path, consent=True, encoding="utf-32",
                        replacements=[Replacement(start=len(text) + len(region) - 2, end=len(text) + len(region) - 2,
                                                  text=" + 1")])
    return [encode(req), encode(edit), encode(Tick(time_ms=60_000))]


def test_partition_settler_and_reference_scrub_and_exclude() -> None:
    secret, line = PLANTED["aws_access_key"]
    for path, expect in (("src/settings.py", 1), ("app/.env.local", 0)):
        records = _events(path, "import os\n", line.format(secret))
        settler = PartitionSettler(0, TrackerConfig())
        outs = [o for i, r in enumerate(records) for o in settler.handle(i, None, r)]
        settled = [o for o in outs if o.topic == "settled"]
        reference = settle_records(enumerate(records), TrackerConfig())
        assert len(settled) == len(reference.examples) == expect
        for o in settled:
            assert secret.encode() not in o.value and b"<secret:aws_access_key>" in o.value
            assert o.value == encode(reference.examples[0])
        if expect:
            assert settler.safety.scrubbed["aws_access_key"] >= 4
        else:
            assert settler.safety.dropped["excluded_path"] == reference.safety.dropped["excluded_path"] == 1


# -- properties ---------------------------------------------------------------------------

_code = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@settings(max_examples=150, deadline=None)
@given(before=_code, after=_code, kind=st.sampled_from(sorted(PLANTED)), cursor=st.integers(0, 10_000))
def test_a_planted_secret_never_survives_any_surrounding_text(before: str, after: str, kind: str, cursor: int) -> None:
    secret, line = PLANTED[kind]
    text = f"{before}\n{line.format(secret)}\n{after}"
    ex = _example(text, cursor=min(cursor, len(text)), excerpt=Excerpt(path="src/app/config.py", text=text))
    verdict = make_safe(ex)
    assert isinstance(verdict, Safe)
    out = verdict.example
    for piece in secret.split("\n"):
        if len(piece) >= 8 and "PRIVATE KEY" not in piece:
            assert piece not in encode(out).decode()
    assert 0 <= out.cursor <= len(out.original_text)
    for m in re.finditer(r"<secret:[a-z0-9_]+>", out.original_text):
        assert not m.start() < out.cursor < m.end()


@settings(max_examples=200, deadline=None)
@given(text=_code, path=st.text(max_size=40), cursor=st.integers(0, 300))
def test_make_safe_never_raises_and_is_idempotent(text: str, path: str, cursor: int) -> None:
    ex = _example(text, path=path or "a", cursor=min(cursor, len(text)))
    verdict = make_safe(ex)
    if isinstance(verdict, Safe):
        again = make_safe(verdict.example)
        assert isinstance(again, Safe) and again.example == verdict.example
