"""`settle ingest`: the HTTP endpoint editors post telemetry and Zed's settled reports to."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from settle.streams.cli.common import BootstrapOpt, PrefixOpt, app, err, fail, settings_from


@app.command()
def ingest(
    host: Annotated[Optional[str], typer.Option(help="listen address [env SETTLE_INGEST_HOST]")] = None,
    port: Annotated[Optional[int], typer.Option(help="listen port [env SETTLE_INGEST_PORT]")] = None,
    tokens_file: Annotated[
        Optional[str], typer.Option(help="file of CLIENT:TOKEN lines [env SETTLE_INGEST_TOKENS_FILE]")
    ] = None,
    rate: Annotated[Optional[float], typer.Option(help="values/s per client; 0 = unlimited")] = None,
    bootstrap: BootstrapOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Serve POST /v1/events, /predict_edits/requests, /predict_edits/settled; GET /healthz, /readyz, /metrics.

    Clients authenticate with `Authorization: Bearer TOKEN`; tokens come from SETTLE_INGEST_TOKENS
    (`client:token,client2:token2`) or --tokens-file.
    """
    import logging

    from settle.streams.ingest.config import IngestConfig
    from settle.streams.ingest.server import run_ingest

    s = settings_from(bootstrap=bootstrap, topic_prefix=prefix)
    try:
        config = IngestConfig.from_env(host=host, port=port, tokens_file=tokens_file, rate_per_s=rate)
        clients = set(config.token_map().values())
    except (OSError, ValueError) as exc:
        raise fail(f"ingest: {exc}") from None
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    err.print(f"ingest on http://{config.host}:{config.port} -> {s.bootstrap} ({len(clients)} client(s))")
    run_ingest(s, config)
