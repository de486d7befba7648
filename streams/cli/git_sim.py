"""`settle simulate --git REPO`: sessions from a repository's history, checked by the simulator itself."""

from __future__ import annotations

import sys
from pathlib import Path

from settle.streams.cli.common import err, fail, settings_from


def simulate_git(repo: Path, rev: str | None, max_commits: int, seed: int, start_ms: int | None, out: Path) -> None:
    from settle.schemas.jsonl import write_records
    from settle.streams.simulate.git_history import GitError, GitSimConfig, generate, self_check

    if not repo.is_dir():
        raise fail(f"{repo}: not a directory")
    tracker = settings_from().tracker
    kwargs: dict[str, object] = {"repo": repo, "rev": rev, "max_commits": max_commits, "seed": seed,
                                 "tracker": tracker}
    if start_ms is not None:
        kwargs["start_ms"] = start_ms
    try:
        sim = generate(GitSimConfig(**kwargs))  # type: ignore[arg-type]
    except GitError as exc:
        raise fail(str(exc)) from None
    if not sim.events:
        raise fail(f"{repo}: no commit in {rev or 'HEAD'} changes a text file")
    if str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
    n = write_records(sim.events, sys.stdout.buffer if str(out) == "-" else out)
    report = self_check(sim, tracker)
    err.print(f"wrote {n} events", markup=False)
    for line in report.lines():
        err.print(line, markup=False)
    for line in report.mismatches[:10]:
        err.print(f"  {line}", markup=False)
    if not report.ok:
        raise fail("the simulator's self-check failed (see above)")
