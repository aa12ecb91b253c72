#!/usr/bin/env python3
"""Drives real Kafka clients against a Weir node for the e2e tests (tests/e2e/kafka/).

One subcommand per action; `--client` picks the library: confluent (confluent-kafka, on
librdkafka), kafka-python or aiokafka. Each prints one JSON object to stdout (the `member`
subcommand one JSON object per line, as things happen) and exits non-zero with a message on
stderr when something fails. Every wait has a timeout and the whole run has a deadline
(`--timeout`), so nothing hangs.

  produce     messages from stdin (a JSON list of {key, value, headers, partition, timestamp})
              -> {"results": [{"partition", "offset"}]} in input order (offset -1 with acks=0)
  consume     assign one partition, seek (beginning | end | offset:N | time:MS), read --count
              records -> {"position", "records": [{partition, offset, key, value, headers,
              timestamp, received_ms}]}
  member      a subscribed group member that commits each record (with --metadata) before
              printing it as committed; stops cleanly (LeaveGroup) when stdin closes
  follow      assign partitions 0..--partitions of --topic at offset 0 and print each record
              as read, one JSON object a line (confluent only), until stdin closes; a lost
              position is an error event, never a reset (auto.offset.reset=error)
  committed   a group's committed offsets and metadata -> {"committed": [...]}
  commit      commits --offsets P:O,... for a group -> {"committed": [...]}
  longpoll    an idle consumer on an empty partition, a record produced 1 s later: how many
              Fetch requests the broker saw while idle and how late the record arrived
  admin       confluent-kafka's AdminClient topic calls on --topic -> their results
  admin-groups  the AdminClient's group calls on --group -> their results
"""

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
import urllib.request


def fail(message):
    print(f"clients.py: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def now_ms():
    return int(time.time() * 1000)


def text(raw):
    """Bytes from a client as text; None stays None."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    return bytes(raw).decode("utf-8", errors="replace")


def raw(value):
    return None if value is None else value.encode("utf-8")


def header_list(headers):
    return [[k, text(v)] for k, v in (headers or [])]


def record(partition, offset, key, value, headers, timestamp):
    return {
        "partition": partition,
        "offset": offset,
        "key": text(key),
        "value": text(value),
        "headers": header_list(headers),
        "timestamp": timestamp,
        "received_ms": now_ms(),
    }


def emit(obj):
    print(json.dumps(obj), flush=True)


def acks_of(value):
    return "all" if value == "all" else int(value)


def parse_seek(seek):
    """('beginning'|'end', None) or ('offset'|'time', N)."""
    if seek in ("beginning", "end"):
        return seek, None
    kind, _, n = seek.partition(":")
    if kind not in ("offset", "time") or not n.lstrip("-").isdigit():
        fail(f"bad --seek {seek!r}")
    return kind, int(n)


def conf_pairs(args):
    """The --conf KEY=VALUE pairs."""
    return [kv.split("=", 1) for kv in args.conf]


def fetch_requests(metrics_url):
    """weir_requests_total{api="kafka_Fetch"} from the node's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        body = response.read().decode()
    for line in body.splitlines():
        if line.startswith('weir_requests_total{api="kafka_Fetch"}'):
            return int(float(line.split()[-1]))
    return 0


def producer_settings(args, acks, compression, idempotent):
    """The producer settings kafka-python and aiokafka share (same names in both)."""
    settings = {
        "bootstrap_servers": args.bootstrap,
        "acks": acks,
        "linger_ms": 5,
        "compression_type": None if compression == "none" else compression,
        "request_timeout_ms": 10000,
    }
    if idempotent:
        settings["enable_idempotence"] = True
    return settings


# ---------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka)


class Confluent:
    def __init__(self, args):
        import confluent_kafka

        self.ck = confluent_kafka
        self.args = args

    def conf(self, **extra):
        conf = {"bootstrap.servers": self.args.bootstrap, "socket.timeout.ms": 10000}
        conf.update(extra)
        return conf

    def producer(self, acks, compression, idempotent, **extra):
        conf = self.conf(
            **{
                "acks": str(acks),
                "compression.type": compression,
                "linger.ms": 5,
                "enable.idempotence": idempotent,
                "message.timeout.ms": 30000,
            }
        )
        conf.update(extra)
        return self.ck.Producer(conf)

    def produce(self, topic, messages, acks, compression, idempotent, extra):
        producer = self.producer(acks, compression, idempotent, **extra)
        results = [None] * len(messages)
        errors = []

        def done(i):
            def callback(err, msg):
                if err is not None:
                    errors.append(f"message {i}: {err}")
                else:
                    offset = msg.offset()
                    results[i] = {
                        "partition": msg.partition(),
                        "offset": -1 if offset is None or offset < 0 else offset,
                    }

            return callback

        for i, m in enumerate(messages):
            kwargs = {"value": raw(m.get("value")), "on_delivery": done(i)}
            if m.get("key") is not None:
                kwargs["key"] = raw(m["key"])
            if m.get("headers"):
                kwargs["headers"] = [(k, raw(v)) for k, v in m["headers"]]
            if m.get("partition") is not None:
                kwargs["partition"] = m["partition"]
            if m.get("timestamp") is not None:
                kwargs["timestamp"] = m["timestamp"]
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        left = producer.flush(30)
        if left:
            fail(f"{left} messages not delivered within 30 s")
        if errors:
            fail("; ".join(errors[:5]))
        return results

    def consumer(self, group=None, **extra):
        conf = self.conf(
            **{
                "group.id": group or "clients-py-assign",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            }
        )
        conf.update(extra)
        return self.ck.Consumer(conf)

    def consume(self, topic, partition, seek, count, timeout):
        TP = self.ck.TopicPartition
        consumer = self.consumer(**dict(conf_pairs(self.args)))
        kind, n = parse_seek(seek)
        low, high = consumer.get_watermark_offsets(TP(topic, partition), timeout=10)
        if kind == "beginning":
            start, position = self.ck.OFFSET_BEGINNING, low
        elif kind == "end":
            start, position = self.ck.OFFSET_END, high
        elif kind == "offset":
            start = position = n
        else:
            found = consumer.offsets_for_times([TP(topic, partition, n)], timeout=10)[0]
            if found.error is not None:
                fail(f"offsets_for_times: {found.error}")
            position = found.offset if found.offset >= 0 else None
            start = found.offset if found.offset >= 0 else self.ck.OFFSET_END
        consumer.assign([TP(topic, partition, start)])
        records = []
        deadline = time.time() + timeout
        while len(records) < count and time.time() < deadline:
            for msg in consumer.consume(count - len(records), 0.2):
                if msg.error() is not None:
                    fail(f"consume: {msg.error()}")
                records.append(
                    record(
                        msg.partition(),
                        msg.offset(),
                        msg.key(),
                        msg.value(),
                        msg.headers(),
                        msg.timestamp()[1],
                    )
                )
        consumer.close()
        return position, records

    def member(self, topic, group, strategy, metadata, stop):
        TP = self.ck.TopicPartition
        consumer = self.consumer(
            group,
            **{
                "partition.assignment.strategy": strategy or "range",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
                "max.poll.interval.ms": 10000,
            },
        )

        def on_assign(c, partitions):
            emit({"event": "assigned", "partitions": sorted(p.partition for p in partitions)})

        def on_revoke(c, partitions):
            emit({"event": "revoked", "partitions": sorted(p.partition for p in partitions)})

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        while not stop.is_set():
            msgs = consumer.consume(100, 0.1)
            done = []
            for msg in msgs:
                if msg.error() is not None:
                    emit({"event": "error", "error": str(msg.error())})
                    continue
                done.append(msg)
            if not done:
                continue
            last = {}
            for msg in done:
                last[msg.partition()] = msg.offset()
            offsets = [TP(topic, p, o + 1, metadata=metadata) for p, o in last.items()]
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except self.ck.KafkaException as e:
                # Not committed: another member will get these again.
                emit({"event": "commit_failed", "error": str(e)})
                continue
            for msg in done:
                emit(
                    {
                        "event": "committed",
                        "partition": msg.partition(),
                        "offset": msg.offset(),
                        "value": text(msg.value()),
                    }
                )
        consumer.close()

    def follow(self, topic, partitions, stop):
        TP = self.ck.TopicPartition
        consumer = self.consumer(
            **{"auto.offset.reset": "error", "topic.metadata.refresh.interval.ms": 1000},
            **dict(conf_pairs(self.args)),
        )
        consumer.assign([TP(topic, p, 0) for p in range(partitions)])
        while not stop.is_set():
            for msg in consumer.consume(100, 0.1):
                if msg.error() is not None:
                    error = msg.error()
                    emit({"event": "error", "name": error.name(), "error": str(error)})
                    continue
                emit(
                    {
                        "event": "record",
                        "partition": msg.partition(),
                        "offset": msg.offset(),
                        "value": text(msg.value()),
                    }
                )
        consumer.close()

    def committed(self, topic, group, partitions):
        TP = self.ck.TopicPartition
        consumer = self.consumer(group)
        found = consumer.committed([TP(topic, p) for p in range(partitions)], timeout=10)
        consumer.close()
        return [
            {"partition": tp.partition, "offset": tp.offset, "metadata": tp.metadata}
            for tp in found
        ]

    def commit(self, topic, group, offsets, metadata):
        TP = self.ck.TopicPartition
        consumer = self.consumer(group)
        consumer.commit(
            offsets=[TP(topic, p, o, metadata=metadata) for p, o in offsets],
            asynchronous=False,
        )
        consumer.close()

    def longpoll(self, topic, partition, metrics_url):
        TP = self.ck.TopicPartition
        consumer = self.consumer(**{"fetch.wait.max.ms": 5000, "fetch.min.bytes": 1})
        consumer.assign([TP(topic, partition, self.ck.OFFSET_END)])
        producer = self.producer(1, "none", False)
        return run_longpoll(
            metrics_url,
            poll=lambda: [m for m in consumer.consume(1, 0.1) if m.error() is None],
            produce=lambda: (
                producer.produce(topic, value=b"wake", partition=partition),
                producer.flush(10),
            ),
        )


# ---------------------------------------------------------------------------------------------
# kafka-python


class KafkaPython:
    def __init__(self, args):
        import kafka

        self.kafka = kafka
        self.args = args

    def produce(self, topic, messages, acks, compression, idempotent, extra):
        producer = self.kafka.KafkaProducer(
            **producer_settings(self.args, acks, compression, idempotent)
        )
        futures = []
        for m in messages:
            futures.append(
                producer.send(
                    topic,
                    value=raw(m.get("value")),
                    key=raw(m.get("key")),
                    headers=[(k, raw(v)) for k, v in m.get("headers") or []] or None,
                    partition=m.get("partition"),
                    timestamp_ms=m.get("timestamp"),
                )
            )
        producer.flush(timeout=30)
        if acks == 0:
            # kafka-python 2.3.3 queues an acks=0 request on its connection but only writes it
            # out with the connection's next request (client_async.send does not mark a
            # request that expects no response as pending): push the bytes out ourselves.
            for conn in list(producer._sender._client._conns.values()):
                conn.send_pending_requests()
        results = []
        for f in futures:
            meta = f.get(timeout=30)
            results.append({"partition": meta.partition, "offset": max(meta.offset, -1)})
        producer.close(timeout=10)
        return results

    def consumer(self, group=None, **extra):
        kwargs = {
            "bootstrap_servers": self.args.bootstrap,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": 100,
            "request_timeout_ms": 30000,
        }
        kwargs.update(extra)
        return self.kafka.KafkaConsumer(**kwargs)

    def consume(self, topic, partition, seek, count, timeout):
        tp = self.kafka.TopicPartition(topic, partition)
        extra = {k: int(v) if v.isdigit() else v for k, v in conf_pairs(self.args)}
        consumer = self.consumer(**extra)
        consumer.assign([tp])
        kind, n = parse_seek(seek)
        if kind == "beginning":
            consumer.seek_to_beginning(tp)
        elif kind == "end":
            consumer.seek_to_end(tp)
        elif kind == "offset":
            consumer.seek(tp, n)
        else:
            found = consumer.offsets_for_times({tp: n})[tp]
            if found is None:
                consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found.offset)
        position = consumer.position(tp)
        if kind == "time" and found is None:
            position = None
        records = []
        deadline = time.time() + timeout
        while len(records) < count and time.time() < deadline:
            polled = consumer.poll(timeout_ms=200, max_records=count - len(records))
            for msgs in polled.values():
                for msg in msgs:
                    records.append(
                        record(
                            msg.partition,
                            msg.offset,
                            msg.key,
                            msg.value,
                            msg.headers,
                            msg.timestamp,
                        )
                    )
        consumer.close()
        return position, records

    def member(self, topic, group, strategy, metadata, stop):
        kafka = self.kafka
        consumer = self.consumer(
            group,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            max_poll_interval_ms=10000,
        )

        class Listener(kafka.ConsumerRebalanceListener):
            def on_partitions_assigned(self, assigned):
                emit({"event": "assigned", "partitions": sorted(p.partition for p in assigned)})

            def on_partitions_revoked(self, revoked):
                emit({"event": "revoked", "partitions": sorted(p.partition for p in revoked)})

        consumer.subscribe([topic], listener=Listener())
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=100, max_records=100)
            for tp, msgs in polled.items():
                last = msgs[-1].offset
                try:
                    consumer.commit(
                        {tp: kafka.structs.OffsetAndMetadata(last + 1, metadata, -1)}
                    )
                except kafka.errors.KafkaError as e:
                    emit({"event": "commit_failed", "error": str(e)})
                    continue
                for msg in msgs:
                    emit(
                        {
                            "event": "committed",
                            "partition": msg.partition,
                            "offset": msg.offset,
                            "value": text(msg.value),
                        }
                    )
        consumer.close()

    def committed(self, topic, group, partitions):
        consumer = self.consumer(group)
        out = []
        for p in range(partitions):
            tp = self.kafka.TopicPartition(topic, p)
            found = consumer.committed(tp, metadata=True)
            out.append(
                {
                    "partition": p,
                    "offset": -1001 if found is None else found.offset,
                    "metadata": None if found is None else found.metadata,
                }
            )
        consumer.close()
        return out

    def longpoll(self, topic, partition, metrics_url):
        tp = self.kafka.TopicPartition(topic, partition)
        consumer = self.consumer(fetch_max_wait_ms=5000, fetch_min_bytes=1)
        consumer.assign([tp])
        consumer.seek_to_end(tp)
        consumer.position(tp)
        producer = self.kafka.KafkaProducer(bootstrap_servers=self.args.bootstrap, acks=1)

        def poll():
            return [m for msgs in consumer.poll(timeout_ms=100).values() for m in msgs]

        return run_longpoll(
            metrics_url,
            poll=poll,
            produce=lambda: producer.send(topic, value=b"wake", partition=partition).get(10),
        )


# ---------------------------------------------------------------------------------------------
# aiokafka


class AioKafka:
    def __init__(self, args):
        import aiokafka

        self.aiokafka = aiokafka
        self.args = args

    def produce(self, topic, messages, acks, compression, idempotent, extra):
        async def run():
            producer = self.aiokafka.AIOKafkaProducer(
                **producer_settings(self.args, acks, compression, idempotent)
            )
            await producer.start()
            try:
                futures = []
                for m in messages:
                    futures.append(
                        await producer.send(
                            topic,
                            value=raw(m.get("value")),
                            key=raw(m.get("key")),
                            headers=[(k, raw(v)) for k, v in m.get("headers") or []] or None,
                            partition=m.get("partition"),
                            timestamp_ms=m.get("timestamp"),
                        )
                    )
                metas = await asyncio.wait_for(asyncio.gather(*futures), 30)
            finally:
                await producer.stop()
            # acks=0: no metadata comes back.
            return [
                {"partition": m.partition if m else -1, "offset": m.offset if m else -1}
                for m in metas
            ]

        return asyncio.run(run())

    def consume(self, topic, partition, seek, count, timeout):
        aiokafka = self.aiokafka

        async def run():
            tp = aiokafka.TopicPartition(topic, partition)
            consumer = aiokafka.AIOKafkaConsumer(
                bootstrap_servers=self.args.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
            )
            await consumer.start()
            try:
                consumer.assign([tp])
                kind, n = parse_seek(seek)
                found = True
                if kind == "beginning":
                    await consumer.seek_to_beginning(tp)
                elif kind == "end":
                    await consumer.seek_to_end(tp)
                elif kind == "offset":
                    consumer.seek(tp, n)
                else:
                    found = (await consumer.offsets_for_times({tp: n}))[tp]
                    if found is None:
                        await consumer.seek_to_end(tp)
                    else:
                        consumer.seek(tp, found.offset)
                position = await consumer.position(tp) if found is not None else None
                records = []
                deadline = time.time() + timeout
                while len(records) < count and time.time() < deadline:
                    polled = await consumer.getmany(
                        tp, timeout_ms=200, max_records=count - len(records)
                    )
                    for msgs in polled.values():
                        for msg in msgs:
                            records.append(
                                record(
                                    msg.partition,
                                    msg.offset,
                                    msg.key,
                                    msg.value,
                                    msg.headers,
                                    msg.timestamp,
                                )
                            )
                return position, records
            finally:
                await consumer.stop()

        return asyncio.run(run())


CLIENTS = {"confluent": Confluent, "kafka-python": KafkaPython, "aiokafka": AioKafka}


# ---------------------------------------------------------------------------------------------


def run_longpoll(metrics_url, poll, produce):
    """Polls an empty partition; counts the broker's Fetch requests over a 1 s idle window,
    then produces one record and measures how soon the poll returns it."""
    warm_until = time.time() + 0.5
    while time.time() < warm_until:
        if poll():
            fail("longpoll: the partition was not empty")
    before = fetch_requests(metrics_url)
    idle_until = time.time() + 1.0
    while time.time() < idle_until:
        if poll():
            fail("longpoll: a record came while idle")
    after = fetch_requests(metrics_url)
    started = time.time()
    thread = threading.Thread(target=produce)
    thread.start()
    deadline = started + 10
    got = []
    while not got and time.time() < deadline:
        got = poll()
    received = time.time()
    thread.join(10)
    if not got:
        fail("longpoll: the record produced did not arrive within 10 s")
    return {
        "idle_fetch_requests": after - before,
        "idle_seconds": 1.0,
        "latency_ms": int((received - started) * 1000),
        "value": text(got[0].value() if callable(getattr(got[0], "value", None)) else got[0].value),
    }


def admin(args):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import (
        AdminClient,
        ConfigResource,
        NewPartitions,
        NewTopic,
        OffsetSpec,
        ResourceType,
    )

    client = AdminClient({"bootstrap.servers": args.bootstrap})
    topic = args.topic
    out = {}

    def wait(futures):
        return {str(k): v.result(timeout=15) for k, v in futures.items()}

    wait(client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]))
    out["after_create"] = len(client.list_topics(topic, timeout=10).topics[topic].partitions)
    try:
        wait(client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]))
        out["create_again"] = "ok"
    except Exception as e:
        out["create_again"] = e.args[0].name() if e.args and hasattr(e.args[0], "name") else str(e)
    wait(client.create_partitions([NewPartitions(topic, 4)]))
    out["after_create_partitions"] = len(
        client.list_topics(topic, timeout=10).topics[topic].partitions
    )
    configs = client.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    for _, future in configs.items():
        entries = future.result(timeout=15)
        out["configs"] = {name: entry.value for name, entry in entries.items()}
    specs = {TopicPartition(topic, 0): OffsetSpec.earliest()}
    if args.data_topic:
        specs[TopicPartition(args.data_topic, 0)] = OffsetSpec.latest()
    out["list_offsets"] = {
        f"{tp.topic}/{tp.partition}/latest"
        if tp.topic == args.data_topic
        else f"{tp.topic}/{tp.partition}/earliest": f.result(timeout=15).offset
        for tp, f in client.list_offsets(specs).items()
    }
    wait(client.delete_topics([topic]))
    out["after_delete"] = topic in client.list_topics(timeout=10).topics
    return out


def admin_groups(args):
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    client = AdminClient({"bootstrap.servers": args.bootstrap})
    group = args.group
    out = {}
    groups = client.list_consumer_groups().result(timeout=15)
    out["groups"] = sorted(g.group_id for g in groups.valid)
    described = client.describe_consumer_groups([group])
    for _, future in described.items():
        d = future.result(timeout=15)
        out["group"] = {
            "group_id": d.group_id,
            "state": str(d.state),
            "protocol_type": getattr(d, "protocol_type", None),
            "members": len(d.members),
        }
    if args.data_topic:
        listed = client.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        for _, future in listed.items():
            res = future.result(timeout=15)
            out["group_offsets"] = {
                f"{tp.topic}/{tp.partition}": tp.offset for tp in res.topic_partitions
            }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="confluent")
    parser.add_argument("--topic")
    parser.add_argument("--data-topic", help="admin: a topic with records, for list_offsets")
    parser.add_argument("--partition", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--acks", default="1", choices=["0", "1", "all"])
    parser.add_argument("--compression", default="none")
    parser.add_argument("--idempotent", action="store_true")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        help="client settings, KEY=VALUE (confluent: produce, consume, follow; kafka-python: consume)",
    )
    parser.add_argument("--seek", default="beginning")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--wait", type=float, default=10.0, help="consume: seconds for --count")
    parser.add_argument("--group")
    parser.add_argument("--strategy")
    parser.add_argument("--metadata")
    parser.add_argument("--offsets", default="", help="commit: PARTITION:OFFSET,...")
    parser.add_argument("--metrics-url")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of the whole run")
    args = parser.parse_args()

    def deadline(signum, frame):
        fail(f"{args.command} did not finish within {args.timeout} s")

    signal.signal(signal.SIGALRM, deadline)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    client = CLIENTS[args.client](args)
    command = args.command
    per_client = ("produce", "consume", "member", "follow", "committed", "commit", "longpoll")
    if command in per_client and not hasattr(client, command):
        fail(f"{command} is not written for {args.client}")
    if command == "produce":
        messages = json.load(sys.stdin)
        extra = dict(conf_pairs(args))
        results = client.produce(
            args.topic, messages, acks_of(args.acks), args.compression, args.idempotent, extra
        )
        emit({"results": results})
    elif command == "consume":
        position, records = client.consume(
            args.topic, args.partition, args.seek, args.count, args.wait
        )
        emit({"position": position, "records": records})
    elif command == "member":
        stop = threading.Event()

        def watch_stdin():
            sys.stdin.read()
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        client.member(args.topic, args.group, args.strategy, args.metadata, stop)
        emit({"event": "closed"})
    elif command == "follow":
        stop = threading.Event()

        def watch_stdin():
            sys.stdin.read()
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        client.follow(args.topic, args.partitions, stop)
        emit({"event": "closed"})
    elif command == "committed":
        emit({"committed": client.committed(args.topic, args.group, args.partitions)})
    elif command == "commit":
        offsets = [tuple(int(x) for x in po.split(":")) for po in args.offsets.split(",") if po]
        client.commit(args.topic, args.group, offsets, args.metadata)
        emit({"committed": [{"partition": p, "offset": o} for p, o in offsets]})
    elif command == "longpoll":
        emit(client.longpoll(args.topic, args.partition, args.metrics_url))
    elif command == "admin":
        emit(admin(args))
    elif command == "admin-groups":
        emit(admin_groups(args))
    else:
        fail(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
