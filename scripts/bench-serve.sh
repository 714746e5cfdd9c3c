#!/usr/bin/env bash
# `make bench`, third part: `serve` lean (its default) against `serve` with the opt-in hooks
# (--netfilter-split --softirq-context --tx-free) and against do-nothing programs on serve's
# default hooks (`bench empty --hooks serve`). A 64-byte UDP flood between two namespaces,
# interleaved in each round, each run against the no-tool run just before it.
# Appends a section to BENCHMARKS.md. Run as root from the repository root after a build.
# Knobs: ROUNDS (3), FLOOD_S (4), OUT (BENCHMARKS.md).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
FLOOD_S=${FLOOD_S:-4}
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
	python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "pps" in l][-1]["pps"])' "$1.sink"
}


start() { # ARGS...
	"$BIN" "$@" --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B" --duration 60s \
		>"$WORK/out" 2>"$WORK/err" &
	TOOL=$!
	sleep 2.5
}
stop() {
	kill -TERM "$TOOL" && wait "$TOOL" || true
	TOOL=""
}

rows=""
for ((r = 1; r <= ROUNDS; r++)); do
	line="| $r"
	for mode in lean full empty; do
		b=$(flood "$WORK/b")
		case $mode in
		lean) start serve --listen 127.0.0.1:29113 --port "$PORT" ;;
		full) start serve --listen 127.0.0.1:29113 --port "$PORT" --netfilter-split --softirq-context --tx-free ;;
		empty) start bench empty --hooks serve ;;
		esac
		w=$(flood "$WORK/w")
		stop
		line+=$(awk -v b="$b" -v w="$w" 'BEGIN { printf " | %.0f / %.0f (%.3f)", w, b, w / b }')
	done
	rows+="$line |"$'\n'
	echo "bench-serve: round $r done" >&2
done

if [ -f "$OUT" ]; then
	awk '/^## serve: lean default/ { skip = 1; next } skip && /^## / { skip = 0 } !skip' "$OUT" >"$WORK/prev"
	sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$WORK/prev" >"$OUT"
fi
{
	echo
	echo "## serve: lean default against the opt-in hooks and do-nothing programs"
	echo
	echo "\`make bench\` (scripts/bench-serve.sh, ROUNDS=$ROUNDS, FLOOD_S=$FLOOD_S), $(date -u +%Y-%m-%d), kernel $(uname -r)."
	echo "A 64 B UDP flood between two namespaces; packets/s with the tool / without it just before (ratio)."
	echo "lean: \`serve\` as shipped; full: with --netfilter-split --softirq-context --tx-free;"
	echo "empty: \`bench empty --hooks serve\`, do-nothing programs on lean serve's hooks (its floor)."
	echo
	echo "| round | serve lean | serve full | empty programs on serve's hooks |"
	echo "|---|---|---|---|"
	printf '%s' "$rows"
} >>"$OUT"
echo "bench-serve: appended to $OUT" >&2
