#!/usr/bin/env bash
# `make bench`, second part: does covering every namespace cost a packet more? A 64-byte UDP
# flood between two namespaces, interleaved in each round: no tool, `trace` narrowed to the
# two namespaces (--netns), `trace` with no --netns while EXTRA more (idle) namespaces exist,
# so it holds links in EXTRA + 3 namespaces. Also the start-up time (to "tracing") with them.
# Appends a section to BENCHMARKS.md. Run as root from the repository root after a build.
# Knobs: ROUNDS (3), FLOOD_S (4), EXTRA (200), OUT (BENCHMARKS.md).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
FLOOD_S=${FLOOD_S:-4}
EXTRA=${EXTRA:-200}
OUT=${OUT:-BENCHMARKS.md}
NS_A=nsl-bnn-a
NS_B=nsl-bnn-b
EXTRA_PREFIX=nsl-bnn-x
DST=10.78.0.2
PORT=9998
BIN=target/release/netstack-lat
LOAD=target/release/nsl-load
WORK=$(mktemp -d)
TOOL=""

cleanup() {
	[ -n "$TOOL" ] && kill -TERM "$TOOL" 2>/dev/null && wait "$TOOL" 2>/dev/null
	for n in $(ip netns list | awk '{print $1}' | grep -E "^($NS_A|$NS_B|$EXTRA_PREFIX-)" || true); do
		ip netns del "$n" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add nslbn-a netns "$NS_A" type veth peer name nslbn-b netns "$NS_B"
ip -n "$NS_A" addr add 10.78.0.1/24 dev nslbn-a
ip -n "$NS_B" addr add "$DST/24" dev nslbn-b
for ns in "$NS_A" "$NS_B"; do
	ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set nslbn-a up
ip -n "$NS_B" link set nslbn-b up
ip -n "$NS_A" neigh replace "$DST" lladdr "$(ip -n "$NS_B" -br link show nslbn-b | awk '{print $3}')" \
	dev nslbn-a nud permanent
for ((i = 0; i < EXTRA; i++)); do ip netns add "$EXTRA_PREFIX-$i"; done

# Packets per second one flood delivers to the sink.
flood() { # PREFIX
	ip netns exec "$NS_B" "$LOAD" --timeout $((FLOOD_S + 20)) udp-sink --bind "$DST:$PORT" \
		--seconds "$(awk -v f="$FLOOD_S" 'BEGIN { print f - 0.5 }')" >"$1.sink" 2>/dev/null &
	local sink=$!
	for ((i = 0; i < 50; i++)); do grep -q READY "$1.sink" 2>/dev/null && break; sleep 0.1; done
	ip netns exec "$NS_A" "$LOAD" --timeout $((FLOOD_S + 10)) udp-flood --to "$DST:$PORT" \
		--seconds "$FLOOD_S" --size 64 >/dev/null 2>&1 || true
	wait "$sink" || true
	python3 -B scripts/bench_util.py last-pps "$1.sink"
}

# Start trace; STARTUP is the seconds until it says it is tracing (not a subshell: TOOL
# must stay set here).
STARTUP=""
start() { # ARGS...
	local t0 t1
	t0=$(date +%s.%N)
	"$BIN" trace --port "$PORT" --json --duration 60s "$@" >"$WORK/out" 2>"$WORK/err" &
	TOOL=$!
	for ((i = 0; i < 500; i++)); do grep -q tracing "$WORK/err" && break; sleep 0.02; done
	t1=$(date +%s.%N)
	sleep 1
	STARTUP=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}
stop() {
	kill -TERM "$TOOL" && wait "$TOOL" || true
	TOOL=""
}

rows=""
for ((r = 1; r <= ROUNDS; r++)); do
	b1=$(flood "$WORK/b1")
	start --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B"
	s_given=$STARTUP
	given=$(flood "$WORK/g")
	stop
	b2=$(flood "$WORK/b2")
	start
	s_all=$STARTUP
	links=$(ls -l /proc/"$TOOL"/fd | grep -c 'anon_inode:bpf_link' || true)
	all=$(flood "$WORK/a")
	# The namespace scan's own cost: the task iterator's runs (one per thread visited).
	sysctl -qw kernel.bpf_stats_enabled=1
	sleep 2
	iter=$(bpftool prog show name ns_tasks -j 2>/dev/null | python3 -B scripts/bench_util.py prog-run || echo "0 0")
	sysctl -qw kernel.bpf_stats_enabled=0
	stop
	rows+=$(awk -v r="$r" -v b1="$b1" -v g="$given" -v b2="$b2" -v a="$all" -v sg="$s_given" \
		-v sa="$s_all" -v l="$links" 'BEGIN {
		printf "| %d | %.0f | %.0f (%.3f) | %.0f | %.0f (%.3f) | %s s | %s s | %d |\n",
			r, b1, g, g / b1, b2, a, a / b2, sg, sa, l }')
	rows+=$'\n'
	echo "bench-netns: round $r done" >&2
done

# Replace this section if an earlier run left one (bench.sh rewrites the rest).
if [ -f "$OUT" ]; then
	awk '/^## Every namespace:/ { skip = 1; next } skip && /^## / { skip = 0 } !skip' "$OUT" >"$WORK/prev"
	sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$WORK/prev" >"$OUT"
fi
threads=$(ps -eL --no-headers | wc -l)
read -r iter_ns iter_runs <<<"$iter"
{
	echo
	echo "## Every namespace: cost per packet and start-up with $EXTRA extra namespaces"
	echo
	echo "\`make bench\` (scripts/bench-netns.sh, ROUNDS=$ROUNDS, FLOOD_S=$FLOOD_S, EXTRA=$EXTRA), $(date -u +%Y-%m-%d), kernel $(uname -r)."
	echo "A 64 B UDP flood between two namespaces; each round: no tool, \`trace\` with \`--netns\` for the two,"
	echo "no tool, \`trace\` without \`--netns\` while $EXTRA more idle namespaces exist (links in all of them)."
	echo "Ratios are each run's packets/s over the no-tool run just before it. Start-up: until \"tracing\"."
	echo
	echo "| round | baseline pps | trace --netns (ratio) | baseline pps | trace, every namespace (ratio) | start --netns | start, every namespace | links held |"
	echo "|---|---|---|---|---|---|---|---|"
	printf '%s' "$rows"
	echo
	awk -v t="$iter_ns" -v n="$iter_runs" -v th="$threads" 'BEGIN {
		per = n > 0 ? t / n : 0
		printf "Namespace scan (BPF task iterator, twice a second): %.0f ns per thread visited over 2 s with bpf_stats (%d visits); with %d threads here, %.0f us per pass.\n", per, n, th, per * th / 1000 }'
} >>"$OUT"
echo "bench-netns: appended to $OUT" >&2
