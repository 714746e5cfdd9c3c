#!/usr/bin/env bash
# `make soak [MINUTES=60]`: `serve` and `trace --prometheus` together, for MINUTES, under a
# paced mix of UDP datagrams and short TCP connections between two namespaces joined by a
# veth, while a namespace with a veth is created and deleted every CHURN_S seconds. Every
# SAMPLE_S seconds scripts/soak_report.py records each tool's RSS, open fds, CPU, entries of
# its own BPF hash maps, /metrics size and loss counters; at the end it judges: at most 10%
# growth over the last half, and every datagram and connection the sink saw is in the tool's
# counts or in its loss counters. Writes OUT/{soak.csv,maps.csv,summary.md,soak.svg}.
# Run as root from the repository root after `cargo build --release`.
# Knobs: MINUTES (60) or SOAK_SECONDS (a multiple of SAMPLE_S), SAMPLE_S (10), UDP_PPS (48000),
# CONNS (300 TCP connections/s), CHURN_S (3), OUT (bench/soak).
set -euo pipefail

SAMPLE_S=${SAMPLE_S:-10}
MINUTES=${MINUTES:-60}
SOAK_SECONDS=${SOAK_SECONDS:-$((MINUTES * 60))}
UDP_PPS=${UDP_PPS:-48000}
CONNS=${CONNS:-300}
CHURN_S=${CHURN_S:-3}
OUT=${OUT:-bench/soak}
NS_A=nsl-soak-a
NS_B=nsl-soak-b
CHURN=nsl-soak-c
DST=10.83.0.2
PORT=9300
BIN=target/release/netstack-lat
LOAD=target/release/nsl-load
REPORT="python3 $(dirname "$0")/soak_report.py"

die() { echo "soak: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (BPF, namespaces): run it as root or through make soak"
[ -x "$BIN" ] && [ -x "$LOAD" ] || die "$BIN or $LOAD missing: run cargo build --release first"
case $SOAK_SECONDS in '' | *[!0-9]*) die "SOAK_SECONDS/MINUTES must be a whole number, got '$SOAK_SECONDS'" ;; esac
[ "$SOAK_SECONDS" -ge $((3 * SAMPLE_S)) ] || die "the run must last at least 3 samples ($((3 * SAMPLE_S)) s)"
[ $((SOAK_SECONDS % SAMPLE_S)) -eq 0 ] || die "SOAK_SECONDS ($SOAK_SECONDS) must be a multiple of SAMPLE_S ($SAMPLE_S)"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	for n in $(ip netns list | awk '{print $1}' | grep -E "^($NS_A|$NS_B|$CHURN-)" || true); do
		ip netns del "$n" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free loopback ports for the two exporters.
read -r P_SERVE P_TRACE < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add nslsk-a netns "$NS_A" type veth peer name nslsk-b netns "$NS_B"
ip -n "$NS_A" addr add 10.83.0.1/24 dev nslsk-a
ip -n "$NS_B" addr add "$DST/24" dev nslsk-b
for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
ip -n "$NS_A" link set nslsk-a up
ip -n "$NS_B" link set nslsk-b up

BOUND=$((SOAK_SECONDS + 120))
"$BIN" serve --listen "127.0.0.1:$P_SERVE" --duration "${BOUND}s" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVE=$!
PIDS+=("$SERVE")
"$BIN" trace --prometheus "127.0.0.1:$P_TRACE" --interval "${SAMPLE_S}s" --json --duration "${BOUND}s" \
	>"$WORK/trace.jsonl" 2>"$WORK/trace.err" &
TRACE=$!
PIDS+=("$TRACE")
for ((i = 0; ; i++)); do
	curl -sf "127.0.0.1:$P_SERVE/metrics" >/dev/null && curl -sf "127.0.0.1:$P_TRACE/metrics" >/dev/null &&
		grep -q tracing "$WORK/serve.err" && grep -q tracing "$WORK/trace.err" && break
	kill -0 "$SERVE" "$TRACE" 2>/dev/null || { cat "$WORK/serve.err" "$WORK/trace.err" >&2; die "a tool exited at start"; }
	[ "$i" -lt 120 ] || die "the tools did not start within 60 s"
	sleep 0.5
done

ip netns exec "$NS_B" "$LOAD" --timeout "$((SOAK_SECONDS + 60))" soak-sink --bind "$DST:$PORT" \
	--seconds "$((SOAK_SECONDS + 3))" >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK=$!
PIDS+=("$SINK")
for ((i = 0; i < 100; i++)); do grep -q READY "$WORK/sink.out" 2>/dev/null && break; sleep 0.1; done
grep -q READY "$WORK/sink.out" || die "the sink did not start: $(cat "$WORK/sink.err")"

mkdir -p "$OUT"
$REPORT sample --proc "serve=$SERVE=http://127.0.0.1:$P_SERVE/metrics" \
	--proc "trace=$TRACE=http://127.0.0.1:$P_TRACE/metrics" --dev "$NS_B:nslsk-b" \
	--every "$SAMPLE_S" --seconds "$SOAK_SECONDS" --csv "$OUT/soak.csv" --maps-csv "$OUT/maps.csv" &
SAMPLER=$!
PIDS+=("$SAMPLER")

ip netns exec "$NS_A" "$LOAD" --timeout "$((SOAK_SECONDS + 60))" soak-send --to "$DST:$PORT" \
	--seconds "$SOAK_SECONDS" --udp-pps "$UDP_PPS" --conns-per-s "$CONNS" >"$WORK/send.out" 2>"$WORK/send.err" &
SEND=$!
PIDS+=("$SEND")

# Namespace churn: a namespace whose veth peer sits in the sink's namespace, 20 datagrams
# across it, then gone; bounded by the run's length.
churn() {
	local end=$((SECONDS + SOAK_SECONDS)) n=0 c peer
	while [ "$SECONDS" -lt "$end" ]; do
		c="$CHURN-$((n % 1000))"
		peer="nslsc-b$((n % 1000))"
		ip netns add "$c"
		ip link add nslsc-c netns "$c" type veth peer name "$peer" netns "$NS_B"
		ip -n "$c" addr add 10.84.0.1/30 dev nslsc-c
		ip -n "$NS_B" addr add 10.84.0.2/30 dev "$peer"
		ip -n "$c" link set nslsc-c up
		ip -n "$NS_B" link set "$peer" up
		ip netns exec "$c" "$LOAD" --timeout 5 udp-send --to 10.84.0.2:9301 --count 20 >/dev/null 2>&1 || true
		sleep "$CHURN_S"
		# The veth first: a namespace's deletion (and its veth's) finishes in the background.
		ip -n "$NS_B" link del "$peer"
		ip netns del "$c"
		n=$((n + 1))
	done
	echo "$n" >"$WORK/churned"
}
churn &
CHURNER=$!
PIDS+=("$CHURNER")

wait "$SEND" || die "the sender failed: $(cat "$WORK/send.err")"
wait "$SINK" || die "the sink failed: $(cat "$WORK/sink.err")"
wait "$CHURNER" || die "the namespace churn failed"
wait "$SAMPLER" || die "the sampler failed"
# What the tools counted, once the last packet is in.
sleep 2
curl -sf "127.0.0.1:$P_SERVE/metrics" >"$OUT/final-serve.metrics" || die "serve's /metrics did not answer"
curl -sf "127.0.0.1:$P_TRACE/metrics" >"$OUT/final-trace.metrics" || die "trace's /metrics did not answer"
kill -INT "$SERVE" "$TRACE"
rc=0
wait "$SERVE" || rc=$?
[ "$rc" -eq 0 ] || die "serve exited with $rc: $(tail -3 "$WORK/serve.err")"
wait "$TRACE" || rc=$?
[ "$rc" -eq 0 ] || die "trace exited with $rc: $(tail -3 "$WORK/trace.err")"
PIDS=()

grep -v READY "$WORK/sink.out" >"$OUT/sink.json"
cp "$WORK/send.out" "$OUT/send.json"
tail -n 1 "$WORK/trace.jsonl" >"$OUT/trace-summary.json"
tail -n 2 "$WORK/serve.err" >"$OUT/serve-summary.txt"
echo "soak: $(cat "$WORK/churned") namespaces created and deleted" >&2
$REPORT judge --dir "$OUT" --netns "$NS_B" --every "$SAMPLE_S"
