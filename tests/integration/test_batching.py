"""streams/kafka/batching.py against the real broker: a BatchApp worker process gets every record of its batch topic
once, in partition order, in lists, and Faust commits exactly what the handler acked."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from settle.streams.kafka.io import committed_offsets
from settle.streams.kafka.topics import ensure_topics
from settle.streams.settings import EDITS, Settings

pytestmark = pytest.mark.broker

#: the worker: acks every record except those of partition 0 at offset >= HOLD_FROM (held, never committed)
WORKER = textwrap.dedent('''
    import json, sys
    import faust
    from settle.streams.kafka.batching import BatchApp

    bootstrap, topic, group, out, datadir = sys.argv[1:6]
    HOLD_FROM = 150
    app = BatchApp(group, broker=f"kafka://{bootstrap}", key_serializer="raw", value_serializer="raw",
                   web_enabled=False, datadir=datadir, topic_partitions=4, consumer_auto_offset_reset="earliest",
                   topic_disable_leader=True, broker_commit_interval=0.5)
    source = app.topic(topic, partitions=4)
    log = open(out, "a")

    async def handle(batch):
        log.write(json.dumps([[m.partition, m.offset, len(batch)] for m in batch]) + "\\n")
        log.flush()
        for m in batch:
            if not (m.partition == 0 and m.offset >= HOLD_FROM):
                app.consumer.ack(m)

    app.topics.add(source)
    app.batch_handlers[source.get_topic_name()] = handle
    sys.argv = [sys.argv[0]]
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
''')


async def _produce(settings: Settings, n: int) -> dict[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic(EDITS), value=b"%d" % i, key=b"k%d" % (i % 37))
                   for i in range(n)]
        counts: collections.Counter[int] = collections.Counter()
        for f in futures:
            counts[(await f).partition] += 1
        return dict(counts)
    finally:
        await producer.stop()


def test_batch_app_hands_over_every_record_once_in_order_and_commits_what_was_acked(
    settings: Settings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings, (EDITS,)))
    counts = asyncio.run(_produce(settings, 2_000))
    group = f"{settings.group_prefix}-batching"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "handled.jsonl"
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - the child writes to it until stopped
    proc = subprocess.Popen(
        [sys.executable, str(script), settings.bootstrap, settings.topic(EDITS), group, str(out),
         str(tmp_path / "data")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    want = {p: (150 if p == 0 else n) for p, n in counts.items()}
    try:
        deadline = time.monotonic() + 120
        committed: dict[int, int] = {}
        while time.monotonic() < deadline:
            committed = asyncio.run(committed_offsets(settings, group))
            if committed == want and out.exists() and sum(len(json.loads(x)) for x in out.read_text().splitlines()) >= 2_000:
                break
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # a commit past the held records would show up by now
        assert asyncio.run(committed_offsets(settings, group)) == want
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    batches = [json.loads(line) for line in out.read_text().splitlines()]
    seen = [(p, o) for batch in batches for p, o, _ in batch]
    assert len(seen) == len(set(seen)) == 2_000
    for p, n in counts.items():
        assert [o for q, o in seen if q == p] == list(range(n))  # every offset once, in order
    assert max(size for batch in batches for _, _, size in batch) > 1  # lists, not one record at a time
