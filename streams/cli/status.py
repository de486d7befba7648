"""`settle status`: the status page (band, recent decisions, partitions, models, kept rate)."""

from __future__ import annotations

from typing import Annotated

import typer

from settle.streams.cli.common import BootstrapOpt, PrefixOpt, app, err, settings_from


@app.command()
def status(
    port: Annotated[int, typer.Option(help="serve the page on this port")] = 8090,
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    metrics: Annotated[
        list[str], typer.Option(help="a worker's or scorer's metrics URL (repeat), for open regions and lag")
    ] = [],  # noqa: B006
    recent: Annotated[int, typer.Option(min=1, help="recent scored examples kept for the band and decisions")] = 200,
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Serve the status page: band histogram, recent decisions as diffs, partitions, model verdicts, kept rate."""
    from aiohttp import web

    from settle.streams.status.server import create_status_app

    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)
    err.print(f"status page on http://{host}:{port}/ (topics {s.topic_prefix}*)", markup=False)
    web.run_app(create_status_app(s, list(metrics), recent), host=host, port=port, print=None)
