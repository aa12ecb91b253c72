#!/usr/bin/env bash
# One sitting: a 3-replica broker group (all three processes on this machine) against a
# standalone broker, produce throughput with the same `weir bench produce` load.
#
#   cargo build --release
#   R=3 bench/cluster_vs_standalone.sh          # one line per run in $OUT
#
# Env: R rounds (default 1), FLUSHES (default "async sync"), N messages per run (default
# 2000000), SIZE body bytes (default 100), PRODUCERS (default 4), OUT the results file.
set -u
cd "$(dirname "$0")/.."
WEIR=${WEIR:-$PWD/target/release/weir}
OUT=${OUT:-/tmp/cluster-bench.txt}
R=${R:-1}
N=${N:-2000000}
SIZE=${SIZE:-100}
PRODUCERS=${PRODUCERS:-4}
DIR=/tmp/cluster-bench
SEG=268435456

leader_port() { # the native port of whichever replica leads
  for i in 1 2 3; do
    if curl -s 127.0.0.1:3${i}877/api/v1/broker | grep -q '"role":"leader","term"'; then
      echo 3${i}876; return
    fi
  done
}

bench() { # label port
  local line
  line=$($WEIR bench produce --server 127.0.0.1:$2 --topic b --create --queues 8 \
    --messages $N --size $SIZE --producers $PRODUCERS --json 2>/dev/null | tail -1)
  echo "$1 $line" | tee -a $OUT
}

for r in $(seq 1 $R); do
  for flush in ${FLUSHES:-async sync}; do
    rm -rf $DIR; mkdir -p $DIR
    WEIR_SEGMENT_SIZE=$SEG $WEIR serve --data-dir $DIR/s --listen 127.0.0.1:30876 --http "" --kafka "" \
      --flush $flush > /dev/null 2>&1 &
    pid=$!; sleep 2
    bench "standalone-$flush" 30876
    kill $pid; wait $pid 2>/dev/null
    rm -rf $DIR; mkdir -p $DIR
    pids=()
    for i in 1 2 3; do
      cat > $DIR/n$i.toml <<TOML
data_dir = "$DIR/n$i"
listen = "127.0.0.1:3${i}876"
http_listen = "127.0.0.1:3${i}877"
kafka_listen = ""
flush = "$flush"
segment_size = $SEG
node_id = $i
raft_listen = "127.0.0.1:3${i}880"
raft_peers = ["1=127.0.0.1:31880", "2=127.0.0.1:32880", "3=127.0.0.1:33880"]
TOML
      $WEIR serve --config $DIR/n$i.toml > $DIR/n$i.log 2>&1 &
      pids+=($!)
    done
    port=""
    for _ in $(seq 1 50); do port=$(leader_port); [ -n "$port" ] && break; sleep 0.2; done
    bench "group3-$flush" "$port"
    kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null; sleep 1
  done
done
rm -rf $DIR
