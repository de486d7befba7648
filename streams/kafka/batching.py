"""A Faust app whose consumer hands a topic's fetched records to one handler, a list at a time.

Faust delivers every record through its conductor, a channel queue and a stream,
one at a time, and its fetch loop (``Consumer._drain_messages``) starts two tasks
per record (``wait_first(callback(message), suspend_flow.wait())``). On the
embedded broker that is ~100-150 us a record: several times the cost of settling
it (bench/settle_throughput.py). A topic registered in ``BatchApp.batch_handlers``
skips all of that: each fetch's records of that topic (Faust ``Message`` objects,
in partition order) go to its handler in one call. Faust still owns the group,
rebalances and their signals, acks (``app.consumer.ack(message)``), the periodic
commit, the producer and the worker's life cycle; other topics (tables, agents)
take Faust's usual path.

Records of a batch topic are not tracked as in flight, so a rebalance does not
wait for them to be acknowledged: the handler decides what is safe to ack (the
settle agent acks only what a durable checkpoint covers) and a revoke handler
must let a batch in flight finish (the settle agent holds a lock).

The two methods below mirror faust-streaming 0.15.3's ``Consumer.getmany`` and
``Consumer._drain_messages`` (the lock file pins that version); check them against
Faust's when upgrading it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message

#: what a batch topic's records go to: one list of a fetch's records, in partition order
BatchHandler = Callable[[list[Message]], Awaitable[None]]


class BatchConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer; a fetch's records of a batch topic go to its handler whole."""

    async def _drain_messages(self, fetcher: Any) -> None:  # Faust's fetch loop (its Fetcher service runs it)
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag("fetching")
                await self.sleep(0)  # as Faust: never hold the loop between fetches
                generation, fetched = await self.fetch_lists(timeout=1.0)
                if self.should_stop:
                    continue
                batches: dict[str, list[Message]] = {}
                last_read: dict[str, list[tuple[TP, int]]] = {}
                for tp, messages in fetched:
                    r_offset = read_offset[tp]
                    if r_offset is not None:
                        # as Faust: a record below the last one read is a duplicate fetch
                        messages = [m for m in messages if m.offset >= r_offset]
                        if not messages:
                            continue
                        if messages[0].offset - r_offset > 1 and acks_enabled_for(tp.topic):
                            await self._add_gap(tp, r_offset + 1, messages[0].offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if tp.topic in handlers:
                        batches.setdefault(tp.topic, []).extend(messages)
                        last_read.setdefault(tp.topic, []).append((tp, messages[-1].offset))
                    else:
                        for message in messages:
                            await self.wait_first(self.callback(message), self.suspend_flow.wait())
                        read_offset[tp] = messages[-1].offset
                for topic, messages in batches.items():
                    if self.app.consumer_generation_id != generation:
                        break  # a rebalance began since the fetch (as getmany): not handled, not read
                    await handlers[topic](messages)
                    for tp, offset in last_read[topic]:
                        read_offset[tp] = offset
                self.diag.unset_flag("fetching")
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag("fetching")

    async def fetch_lists(self, timeout: float) -> tuple[int, list[tuple[TP, list[Message]]]]:
        """(consumer generation, [(partition, its records)]) of one fetch, filtered as ``getmany`` filters them.

        Nothing awaits between the fetch and the filtering, so the flow is checked once
        per fetch rather than once per record; the caller drops the fetch if the
        generation changed before its records were handled.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        generation = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return generation, []
        if not self.flow_active:
            try:
                await self.perform_seek()  # as getmany: back to the committed offsets
            except Exception as exc:  # noqa: BLE001 - as Faust's getmany: log it, fetch again
                self.log.warning("exception performing seek when flow not active %r", exc)
            return generation, []
        to_message = self._to_message
        out: list[tuple[TP, list[Message]]] = []
        for tp, recs in records.items():
            if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                out.append((tp, [to_message(tp, r) for r in recs]))
        return generation, out


class BatchTransport(aiokafka_driver.Transport):
    Consumer = BatchConsumer


class BatchApp(faust.App):
    """``faust.App`` with ``batch_handlers``: topic name -> handler of its fetched records.

    Subscribe a batch topic with ``app.topics.add(topic)`` (no agent reads it) and
    register its handler before the worker starts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers: dict[str, BatchHandler] = {}

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)


__all__ = ["BatchApp", "BatchConsumer", "BatchHandler", "BatchTransport"]
