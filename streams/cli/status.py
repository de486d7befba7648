"""`settle status`: the status page (band, recent decisions, partitions, models, kept rate)."""

from __future__ import annotations

from typing import Annotated

import typer

from settle.streams.cli.common import BootstrapOpt, PrefixOpt, app, err, fail, kafka_call, settings_from


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
    """Serve the status page: band histogram, recent decisions as diffs, partitions, model verdicts, kept rate.

    A broker that does not answer at start is an error (it served an empty page before); one that goes
    away later, or a topic that is not there yet, is said on the page until it is back.
    """
    import asyncio
    import socket

    from aiohttp import web

    from settle.streams.kafka.io import broker_topics
    from settle.streams.settings import MODELS, SCORED
    from settle.streams.status.server import create_status_app

    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)
    with socket.socket() as probe:  # the port first: its error is the one to fix first
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    present = kafka_call(lambda: asyncio.run(broker_topics(s, timeout_s=5)), s)
    for topic in (SCORED, MODELS):
        if s.topic(topic) not in present:
            err.print(f"warning: topic {s.topic(topic)!r} does not exist on {s.bootstrap} yet; the page says so "
                      "until it does (`settle topics` creates them)", markup=False)
    err.print(f"status page on http://{host}:{port}/ (topics {s.topic_prefix}*)", markup=False)
    web.run_app(create_status_app(s, list(metrics), recent), host=host, port=port, print=None)
