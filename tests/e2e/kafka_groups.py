#!/usr/bin/env python3
"""Kafka consumer groups against a real `weir serve`, with real Kafka clients (confluent-kafka,
i.e. librdkafka, and kafka-python). Driven by tests/e2e/kafka_groups.rs; each scenario exits 0
when what a user would see holds, and prints what it saw.

  grow       a group grows from 1 to 3 members and shrinks back to 1 while records are
             produced; every record is consumed exactly once among committed work
  commit     commits an offset with a metadata string (and with --kill-pid, SIGKILLs the broker
             the moment it is answered);  check: reads it back
  refused    a Kafka member of a group that native consumers use gets INCONSISTENT_GROUP_PROTOCOL
  hold       a Kafka member that holds a group for a while (prints "assigned" once it has
             partitions)
  python     kafka-python: two members share a topic, the survivor takes everything
"""

import argparse
import collections
import os
import signal
import sys
import threading
import time

WAIT = 30  # seconds any one step may take


def wait_until(what, done, exit_on_timeout=True):
    """Waits up to WAIT seconds for `done()`; on a timeout exits, or returns False."""
    deadline = time.time() + WAIT
    while not done():
        if time.time() > deadline:
            if exit_on_timeout:
                sys.exit(f"timed out waiting for {what}")
            return False
        time.sleep(0.05)
    return True


def create_topic(boot, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": boot})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=WAIT)


def produce(boot, topic, lo, hi):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": boot, "linger.ms": 5})
    for i in range(lo, hi):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    if producer.flush(WAIT) != 0:
        sys.exit("records left unsent")


def grow(args):
    """1 → 2 → 3 → 2 → 1 members; each member commits every record it processes (again after a
    refused commit, while it still owns the partition)."""
    from confluent_kafka import Consumer, TopicPartition

    topic, group, partitions = f"grow-{args.strategy}", f"g-{args.strategy}", 6
    create_topic(args.bootstrap, topic, partitions)
    total = 300
    produce(args.bootstrap, topic, 0, total // 3)
    lock = threading.Lock()
    seen = collections.defaultdict(list)
    owned = {}
    stop = {}
    events = []  # (seconds, member, what): printed when the check fails
    began = time.monotonic()
    cooperative = args.strategy == "cooperative-sticky"

    def note(name, what):
        with lock:
            events.append((round(time.monotonic() - began, 3), name, what))

    def member(name):
        consumer = Consumer(
            {
                "bootstrap.servers": args.bootstrap,
                "group.id": group,
                "client.id": name,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "partition.assignment.strategy": args.strategy,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 300,
            }
        )

        # Records read whose commit was refused (a rebalance in progress), by partition. A real
        # consumer keeps them and commits again: while it still owns the partition, a later
        # commit covers them; once the partition is revoked or lost, its next owner reads them
        # again from the committed offset.
        pending = collections.defaultdict(list)

        def drop_pending(parts):
            for p in parts:
                dropped = pending.pop(p.partition, [])
                if dropped:
                    note(name, f"dropped uncommitted {[o for _, o in dropped]} of {p.partition}")

        def on_assign(c, parts):
            if cooperative:
                c.incremental_assign(parts)
            note(name, f"assigned {sorted(p.partition for p in parts)}")
            with lock:
                owned[name] = owned.get(name, set()) | {p.partition for p in parts}

        def on_revoke(c, parts):
            drop_pending(parts)
            if cooperative:
                c.incremental_unassign(parts)
            note(name, f"revoked {sorted(p.partition for p in parts)}")
            with lock:
                owned[name] = owned.get(name, set()) - {p.partition for p in parts}

        def on_lost(c, parts):
            note(name, f"lost {sorted(p.partition for p in parts)}")
            on_revoke(c, parts)

        def commit(partition):
            """Commits past the partition's pending records; on success they are consumed."""
            records = pending[partition]
            upto = records[-1][1] + 1
            try:
                consumer.commit(
                    offsets=[TopicPartition(topic, partition, upto)], asynchronous=False
                )
            except Exception as error:  # a rebalance in progress: kept, committed again later
                note(name, f"commit of {partition} up to {upto} failed: {error}")
                return
            note(name, f"read and committed {[o for _, o in records]} of {partition}")
            with lock:
                for value, offset in records:
                    seen[value].append((name, partition, offset))
            del pending[partition]

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        while not stop.get(name):
            message = consumer.poll(0.1)
            for partition in list(pending):
                if message is None or message.partition() != partition:
                    commit(partition)
            if message is None:
                continue
            if message.error():
                note(name, f"error {message.error()}")
                continue
            with lock:
                stale = message.partition() not in owned.get(name, set())
            if stale:
                note(name, f"read {(message.partition(), message.offset())}, not its partition")
            pending[message.partition()].append((message.value().decode(), message.offset()))
            commit(message.partition())
        consumer.close()
        note(name, "closed")
        with lock:
            owned.pop(name, None)

    threads = {}

    def start(name):
        # A daemon: a member stuck in its client cannot keep the scenario from exiting.
        threads[name] = threading.Thread(target=member, args=(name,), daemon=True)
        threads[name].start()

    def fail(why):
        print(why, flush=True)
        with lock:
            for event in events:
                print(*event, flush=True)
        os._exit(1)  # members may still be inside librdkafka

    def leave(name):
        stop[name] = True
        threads[name].join(WAIT)
        if threads[name].is_alive():
            fail(f"{name} did not close within {WAIT} s")

    def shared_by(names):
        """Every partition owned by exactly one of `names`, and each of them owns some."""
        with lock:
            sets = [owned.get(n, set()) for n in names]
            union = set().union(*sets)
            return union == set(range(partitions)) and sum(map(len, sets)) == partitions and all(sets)

    def step(what, done):
        if not wait_until(what, done, exit_on_timeout=False):
            fail(f"timed out waiting for {what}")

    start("c1")
    step("c1 owns everything", lambda: shared_by(["c1"]))
    start("c2")
    step("c1 and c2 share the partitions", lambda: shared_by(["c1", "c2"]))
    produce(args.bootstrap, topic, total // 3, 2 * total // 3)
    start("c3")
    step("three members share the partitions", lambda: shared_by(["c1", "c2", "c3"]))
    produce(args.bootstrap, topic, 2 * total // 3, total)
    step("every record consumed", lambda: len(seen) == total)
    leave("c3")
    step("c1 and c2 take c3's partitions", lambda: shared_by(["c1", "c2"]))
    leave("c2")
    step("c1 owns everything again", lambda: shared_by(["c1"]))
    leave("c1")

    missing = [i for i in range(total) if f"v{i}" not in seen]
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    by_member = collections.Counter(v[0][0] for v in seen.values())
    print(f"{args.strategy}: consumed {len(seen)}, missing {len(missing)}, twice {len(twice)}, "
          f"by member {dict(sorted(by_member.items()))}")
    checker = Consumer({"bootstrap.servers": args.bootstrap, "group.id": group})
    committed = checker.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=WAIT)
    checker.close()
    committed_total = sum(tp.offset for tp in committed)
    print(f"{args.strategy}: committed {committed_total}")
    if missing or twice or committed_total != total:
        print("committed by partition:", [(tp.partition, tp.offset) for tp in committed])
        fail(f"missing {missing[:10]}, twice {list(twice.items())[:5]}, committed {committed_total}")


def commit(args):
    from confluent_kafka import Consumer, TopicPartition

    create_topic(args.bootstrap, "meta", 2)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "meta-g", "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("meta", 0, 17, metadata="state=abc")], asynchronous=False)
    if args.kill_pid:
        # The broker crashes the moment the commit is answered.
        os.kill(args.kill_pid, signal.SIGKILL)
        print("committed, broker killed", flush=True)
        os._exit(0)  # the consumer cannot close without its broker
    consumer.close()
    check(args)


def check(args):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "meta-g"})
    committed = consumer.committed([TopicPartition("meta", 0), TopicPartition("meta", 1)], timeout=WAIT)
    consumer.close()
    seen = [(tp.partition, tp.offset, tp.metadata) for tp in committed]
    print(seen)
    if seen[0] != (0, 17, "state=abc") or seen[1][1] >= 0:
        sys.exit(f"unexpected committed offsets {seen}")


def refused(args):
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "session.timeout.ms": 6000})
    consumer.subscribe([args.topic])
    deadline = time.time() + WAIT
    try:
        while time.time() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error():
                print("error", message.error(), flush=True)
                if message.error().code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL:
                    return
        sys.exit("the join was not refused")
    finally:
        consumer.close()


def hold(args):
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "session.timeout.ms": 6000,
                         "client.id": args.client_id})
    consumer.subscribe([args.topic], on_assign=lambda c, p: print("assigned", len(p), flush=True))
    deadline = time.time() + args.seconds
    while time.time() < deadline:
        consumer.poll(0.2)
    consumer.close()


def python(args):
    from kafka import KafkaConsumer

    create_topic(args.bootstrap, "kp", 4)
    produce(args.bootstrap, "kp", 0, 40)
    members = []
    for name in ("p1", "p2"):
        members.append(KafkaConsumer("kp", bootstrap_servers=args.bootstrap, group_id="kp-g", client_id=name,
                                     auto_offset_reset="earliest", enable_auto_commit=False,
                                     session_timeout_ms=6000, heartbeat_interval_ms=300))
    seen = set()

    def assigned():
        for m in members:
            for record in m.poll(timeout_ms=100).values():
                seen.update(r.value for r in record)
        parts = [set(tp.partition for tp in m.assignment()) for m in members]
        return all(parts) and set().union(*parts) == set(range(4)) and sum(map(len, parts)) == 4

    wait_until("two kafka-python members share the partitions", assigned)
    members[1].close()
    members = members[:1]
    wait_until("the survivor takes every partition", assigned)
    wait_until("every record read", lambda: assigned() and len(seen) == 40)
    members[0].close()
    print("kafka-python: read", len(seen))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["grow", "commit", "check", "refused", "hold", "python"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--strategy", default="range")
    parser.add_argument("--group", default="g")
    parser.add_argument("--topic", default="t")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--client-id", default="rdkafka")
    parser.add_argument("--kill-pid", type=int, help="commit: SIGKILL this process once answered")
    args = parser.parse_args()
    {"grow": grow, "commit": commit, "check": check, "refused": refused, "hold": hold, "python": python}[
        args.scenario
    ](args)


if __name__ == "__main__":
    main()
