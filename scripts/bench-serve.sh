#!/usr/bin/env bash
# `make bench`, third part: `serve` lean (its default) against `serve` with the opt-in hooks
# (--netfilter-split --softirq-context --tx-free --send-syscall), against serve joining in user
# space as before (--user-space-join), and against do-nothing programs on serve's
# default hooks (`bench empty --hooks serve`). A 64-byte UDP flood between two namespaces,
# interleaved in each round, each run against the no-tool run just before it.
# Appends a section to BENCHMARKS.md. Run as root from the repository root after a build.
# Knobs: ROUNDS (3), FLOOD_S (4), TCP_S (3), OUT (BENCHMARKS.md).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
FLOOD_S=${FLOOD_S:-4}
TCP_S=${TCP_S:-3}
OUT=${OUT:-BENCHMARKS.md}
NS_A=nsl-bsv-a
NS_B=nsl-bsv-b
EXTRA_PREFIX=nsl-bsv-x
DST=10.79.0.2
PORT=9997
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
ip link add nslbs-a netns "$NS_A" type veth peer name nslbs-b netns "$NS_B"
ip -n "$NS_A" addr add 10.79.0.1/24 dev nslbs-a
ip -n "$NS_B" addr add "$DST/24" dev nslbs-b
for ns in "$NS_A" "$NS_B"; do
	ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set nslbs-a up
ip -n "$NS_B" link set nslbs-b up
ip -n "$NS_A" neigh replace "$DST" lladdr "$(ip -n "$NS_B" -br link show nslbs-b | awk '{print $3}')" \
	dev nslbs-a nud permanent

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


start() { # ARGS...
	"$BIN" "$@" --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B" --duration 60s \
		>"$WORK/out" 2>"$WORK/err" &
	TOOL=$!
	sleep 2.5
}
# CPU time (user + system, in clock ticks) the tool has used so far.
ticks() {
	awk '{ print $14 + $15 }' "/proc/$TOOL/stat"
}
stop() {
	kill -TERM "$TOOL" && wait "$TOOL" || true
	TOOL=""
}

rows=""
for ((r = 1; r <= ROUNDS; r++)); do
	line="| $r"
	for mode in lean ring full empty; do
		b=$(flood "$WORK/b")
		case $mode in
		lean) start serve --listen 127.0.0.1:29113 --port "$PORT" ;;
		ring) start serve --listen 127.0.0.1:29113 --port "$PORT" --user-space-join ;;
		full) start serve --listen 127.0.0.1:29113 --port "$PORT" --netfilter-split --softirq-context --tx-free --send-syscall ;;
		empty) start bench empty --hooks serve ;;
		esac
		c0=$(ticks)
		w=$(flood "$WORK/w")
		c1=$(ticks)
		stop
		line+=$(awk -v b="$b" -v w="$w" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v s="$FLOOD_S" \
			'BEGIN { printf " | %.0f / %.0f (%.3f); CPU %.0f%%", w, b, w / b, 100 * c / hz / s }')
	done
	rows+="$line |"$'\n'
	echo "bench-serve: round $r done" >&2
done

# Gbit/s of one iperf3 stream a -> b; serve runs without --port, so it traces the stream.
tcp() { # PREFIX
	ip netns exec "$NS_B" iperf3 -s -1 -B "$DST" >/dev/null 2>&1 &
	local srv=$!
	sleep 0.5
	ip netns exec "$NS_A" timeout "$((TCP_S + 20))" iperf3 -c "$DST" -t "$TCP_S" -J >"$1.iperf" 2>/dev/null || true
	wait "$srv" 2>/dev/null || true
	python3 -B scripts/bench_util.py iperf-gbps "$1.iperf"
}

tcp_rows=""
for ((r = 1; r <= ROUNDS; r++)); do
	line="| $r"
	for mode in lean ring empty; do
		b=$(tcp "$WORK/tb")
		case $mode in
		lean) start serve --listen 127.0.0.1:29113 ;;
		ring) start serve --listen 127.0.0.1:29113 --user-space-join ;;
		empty) start bench empty --hooks serve ;;
		esac
		w=$(tcp "$WORK/tw")
		stop
		line+=$(awk -v b="$b" -v w="$w" 'BEGIN { printf " | %.2f / %.2f (%.3f)", w, b, w / b }')
	done
	tcp_rows+="$line |"$'\n'
	echo "bench-serve: TCP round $r done" >&2
done

# BPF ns per received packet of the tool's own programs (bpf_stats), over one flood.
bpf_ns() { # ARGS...
	local before
	before=$(bpftool -j prog show | python3 -B scripts/bench_util.py prog-ids)
	start "$@"
	sysctl -q kernel.bpf_stats_enabled=1
	bpftool -j prog show >"$WORK/p0.json"
	flood "$WORK/s" >/dev/null
	bpftool -j prog show >"$WORK/p1.json"
	sysctl -q kernel.bpf_stats_enabled=0
	stop
	python3 -B scripts/bench_util.py ns-per-packet "$WORK/p0.json" "$WORK/p1.json" "$WORK/s.sink" "$before"
}

prof_rows=""
for ((r = 1; r <= ROUNDS; r++)); do
	l=$(bpf_ns serve --listen 127.0.0.1:29113 --port "$PORT")
	e=$(bpf_ns bench empty --hooks serve)
	prof_rows+=$(awk -v l="$l" -v e="$e" -v r="$r" 'BEGIN { printf "| %d | %d | %d | %.2f |", r, l, e, l / e }')$'\n'
	echo "bench-serve: bpf_stats round $r done" >&2
done

# Medians and the goals of the always-on issue, met or missed.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { # TABLE COLUMN: the ratios in parentheses of one column
	printf '%s' "$1" | awk -F'|' -v c="$2" 'NF > 2 { s = $c; sub(/.*\(/, "", s); sub(/\).*/, "", s); print s }'
}
lean_m=$(col "$rows" 3 | median)
empty_m=$(col "$rows" 6 | median)
tcp_m=$(col "$tcp_rows" 3 | median)
ns_m=$(printf '%s' "$prof_rows" | awk -F'|' 'NF > 2 { print $5 }' | median)
goal() { # WHAT VALUE OP LIMIT
	awk -v w="$1" -v v="$2" -v op="$3" -v lim="$4" 'BEGIN {
		ok = (op == ">=") ? (v >= lim) : (v <= lim)
		printf "| %s | %.3f | %s %s | %s |\n", w, v, op, lim, ok ? "met" : "missed" }'
}
goals=$(
	goal "serve pps ratio, 64 B UDP flood (median)" "$lean_m" ">=" 0.80
	goal "serve / do-nothing on its hooks, pps ratio" "$(awk -v a="$lean_m" -v b="$empty_m" 'BEGIN { print a / b }')" ">=" 0.92
	goal "serve TCP throughput ratio, iperf3 (median)" "$tcp_m" ">=" 0.95
	goal "serve BPF ns per packet / do-nothing's" "$ns_m" "<=" 1.4
)

if [ -f "$OUT" ]; then
	awk '/^## serve: lean default/ { skip = 1; next } skip && /^## / { skip = 0 } !skip' "$OUT" >"$WORK/prev"
	sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$WORK/prev" >"$OUT"
fi
{
	echo
	echo "## serve: lean default against the opt-in hooks and do-nothing programs"
	echo
	echo "\`make bench\` (scripts/bench-serve.sh, ROUNDS=$ROUNDS, FLOOD_S=$FLOOD_S), $(date -u +%Y-%m-%d), kernel $(uname -r)."
	echo "A 64 B UDP flood between two namespaces; packets/s with the tool / without it just before (ratio);"
	echo "CPU: the tool's own process (user + system) during the flood, in % of one CPU."
	echo "lean: \`serve\` as shipped (span histograms in the kernel); ring: with --user-space-join (every chain"
	echo "to user space, joined there: serve before the in-kernel tables); full: with --netfilter-split"
	echo "--softirq-context --tx-free --send-syscall;"
	echo "empty: \`bench empty --hooks serve\`, do-nothing programs on lean serve's hooks (its floor)."
	echo
	echo "| round | serve lean | serve --user-space-join | serve full | empty programs on serve's hooks |"
	echo "|---|---|---|---|---|"
	printf '%s' "$rows"
	echo
	echo "TCP: one iperf3 stream a -> b for ${TCP_S} s, Gbit/s with / without (ratio); serve unfiltered."
	echo
	echo "| round | serve lean | serve --user-space-join | empty programs on serve's hooks |"
	echo "|---|---|---|---|"
	printf '%s' "$tcp_rows"
	echo
	echo "BPF time of the tool's own programs (bpf_stats) per packet the sink received, over one flood each:"
	echo
	echo "| round | serve lean ns/packet | do-nothing programs on its hooks ns/packet | ratio |"
	echo "|---|---|---|---|"
	printf '%s' "$prof_rows"
	echo
	echo "Goals (issue 18), from the medians above:"
	echo
	echo "| goal | measured | target | |"
	echo "|---|---|---|---|"
	printf '%s\n' "$goals"
} >>"$OUT"
echo "bench-serve: appended to $OUT" >&2
