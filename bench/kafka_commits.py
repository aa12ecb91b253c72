#!/usr/bin/env python3
"""Synchronous Kafka offset commits per second against a broker's Kafka listener.

MEMBERS consumers (threads, each its own librdkafka client and group, so no rebalances) each
make COMMITS synchronous commits of one partition's offset, one after the other; prints the
commits per second of all of them together and each commit's median and 99th percentile
latency. On a standalone Weir each commit is written to `config/offsets.json` before it is
answered; commits that arrive during a write share the next one, which this shows as the
members grow.

  pip install confluent-kafka
  weir serve --data-dir D --kafka 127.0.0.1:29092 &
  bench/kafka_commits.py 127.0.0.1:29092 1 2000
  bench/kafka_commits.py 127.0.0.1:29092 8 500
"""

import statistics
import sys
import threading
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    bootstrap, members, commits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    topic = f"commits-{int(time.time() * 1000)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=30)
    consumers = [
        Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-{i}",
                  "enable.auto.commit": False})
        for i in range(members)
    ]
    # One commit each first: connections and coordinators are found before the clock starts.
    for consumer in consumers:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    latencies = [[] for _ in range(members)]
    start = threading.Barrier(members + 1)

    def member(i):
        start.wait()
        for offset in range(1, commits + 1):
            began = time.perf_counter()
            consumers[i].commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
            latencies[i].append(time.perf_counter() - began)

    threads = [threading.Thread(target=member, args=(i,)) for i in range(members)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    for consumer in consumers:
        consumer.close()
    every = sorted(x for member in latencies for x in member)
    p99 = every[int(len(every) * 0.99) - 1]
    print(f"members {members} commits {len(every)} in {elapsed:.2f} s: "
          f"{len(every) / elapsed:,.0f} commits/s, median {statistics.median(every) * 1e3:.2f} ms, "
          f"p99 {p99 * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
