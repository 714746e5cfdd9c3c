#!/usr/bin/env bash
# `make bench`: what netstack-lat costs, measured on this machine, written to BENCHMARKS.md
# (tables) and BENCHMARKS.rounds.csv (every round) by scripts/bench_report.py.
#
# Two namespaces joined by a veth carry a 64-byte UDP flood; trace follows it through TX in
# the sender's namespace and RX in the receiver's (the full RX+TX trace). Each round interleaves
# floods with and without a tool (baseline, trace, baseline, empty, baseline, bpftrace),
# so drift from noisy neighbours hits both sides of each pair. Throughput is measured with
# kernel.bpf_stats_enabled=0 (its clock reads would slow every program run); then, with the
# tool still attached, a second flood runs with bpf_stats on and per-program run_time_ns and
# run_cnt are snapshotted right before and after it. Programs are told apart by the tool's
# own file descriptors (/proc/PID/fdinfo prog_id), not by name, so other BPF users stay out.
#
# Run as root from the repository root after `cargo build --release`.
# Knobs (environment): ROUNDS (3), FLOOD_S (4: throughput flood), STATS_S (2: bpf_stats flood),
# FRONTEND_EVENTS (2000000), IPERF_S (3: each TCP throughput run), SSE_N (20000: events of
# each marker SSE run), OUT (BENCHMARKS.md; the rounds go to OUT's name with .rounds.csv),
# NF_RULES (0,100,1000,5000,10000), NF_BACKENDS (all four), NF_RATE (10000), NF_S (10): the
# `bench netfilter` sweep, whose plot goes to docs/netfilter-sweep.svg.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
FLOOD_S=${FLOOD_S:-4}
STATS_S=${STATS_S:-2}
FRONTEND_EVENTS=${FRONTEND_EVENTS:-2000000}
IPERF_S=${IPERF_S:-3}
SSE_N=${SSE_N:-20000}
OUT=${OUT:-BENCHMARKS.md}
NF_RULES=${NF_RULES:-0,100,1000,5000,10000}
NF_BACKENDS=${NF_BACKENDS:-iptables-legacy,iptables-nft,nftables-map,nftables-linear}
NF_RATE=${NF_RATE:-10000}
NF_S=${NF_S:-10}
NF_PLOT=docs/netfilter-sweep.svg

NS_A=nsl-bench-a
NS_B=nsl-bench-b
DST=10.77.0.2
PORT=9999
BIN=target/release/netstack-lat
LOAD=target/release/nsl-load
TRACEFS=/sys/kernel/tracing

# The sink counts for half a second less than the flood lasts, starting at its first
# datagram, so its window lies inside the flood.
SINK_S=$(awk -v f="$FLOOD_S" 'BEGIN { print f - 0.5 }')
STATS_SINK_S=$(awk -v f="$STATS_S" 'BEGIN { print f - 0.5 }')
TOOL_S=$((FLOOD_S + STATS_S + 15)) # every tool's own time limit; we stop it earlier

WORK=""
PIDS=()
NETNS_MADE=0
TRACEFS_MOUNTED=0
OLD_STATS=""
DONE=0 # set when the report is written; a signal before that exits non-zero

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	[ "$rc" = 0 ] && [ "$DONE" = 0 ] && rc=130
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${PIDS[@]}"; do
		stop_wait "$pid" 50
	done
	if [ "$NETNS_MADE" = 1 ]; then
		ip netns del "$NS_A" 2>/dev/null
		ip netns del "$NS_B" 2>/dev/null
	fi
	[ -n "$OLD_STATS" ] && sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS"
	[ "$TRACEFS_MOUNTED" = 1 ] && umount "$TRACEFS"
	[ -n "$WORK" ] && rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT INT TERM

# Wait up to TICKS x 0.1 s for PID to exit; SIGKILL it after that. Leaves its last VmHWM
# (kB) in STOP_HWM. Runs in this shell (never in $(...)), so PID stays our child to reap.
STOP_HWM=0
stop_wait() {
	local pid=$1 ticks=$2 v i
	STOP_HWM=0
	for ((i = 0; i < ticks; i++)); do
		v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
		[ -n "$v" ] && STOP_HWM=$v
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		log "pid $pid did not stop: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# Running (a zombie waiting to be reaped counts as gone).
alive() {
	local state
	state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
	[ -n "$state" ] && [ "$state" != Z ]
}

forget_pid() {
	local keep=() p
	for p in "${PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	PIDS=("${keep[@]}")
}

# BPF programs held by PID (program and link fds both name their prog_id).
prog_ids() {
	cat /proc/"$1"/fdinfo/* 2>/dev/null | awk '/^prog_id:/ { print $2 }' | sort -un | paste -sd, -
}

fd_count() { # PID FIELD: fds whose fdinfo has FIELD (prog_tag: programs, link_type: links)
	grep -l "^$2:" /proc/"$1"/fdinfo/* 2>/dev/null | wc -l
}

# Snapshot the tool's programs: ids from its fds, stats from bpftool.
snapshot() { # PID FILE
	local ids
	ids=$(prog_ids "$1")
	{
		printf '{"ids":[%s],"progs":' "$ids"
		bpftool prog show --json 2>/dev/null || printf '[]'
		printf '}\n'
	} >"$2"
}

# Wait (bounded) until PID holds at least MIN fds of FIELD; false if it died or timed out.
wait_fds() { # PID FIELD MIN TICKS
	local i
	for ((i = 0; i < $4; i++)); do
		alive "$1" || return 1
		[ "$(fd_count "$1" "$2")" -ge "$3" ] && return 0
		sleep 0.1
	done
	return 1
}

preflight() {
	[ "$(id -u)" = 0 ] || die "run as root (it loads BPF programs and creates namespaces)"
	[ -x "$BIN" ] && [ -x "$LOAD" ] || die "build first: cargo build --release"
	command -v bpftool >/dev/null || die "bpftool is needed (apt-get install bpftool)"
	command -v python3 >/dev/null || die "python3 is needed for the report"
	local ns
	for ns in "$NS_A" "$NS_B"; do
		if ip netns list | grep -qw "$ns"; then
			die "namespace $ns exists: another bench running? (else: ip netns del $ns)"
		fi
	done
}

setup_kernel() {
	OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
	stats 0
	if [ ! -d "$TRACEFS/events" ]; then
		mount -t tracefs nodev "$TRACEFS"
		TRACEFS_MOUNTED=1
	fi
}

setup_netns() {
	NETNS_MADE=1
	ip netns add "$NS_A"
	ip netns add "$NS_B"
	ip link add nslb-a netns "$NS_A" type veth peer name nslb-b netns "$NS_B"
	ip -n "$NS_A" addr add 10.77.0.1/24 dev nslb-a
	ip -n "$NS_A" addr add fd77::1/64 dev nslb-a nodad
	ip -n "$NS_B" addr add 10.77.0.2/24 dev nslb-b
	ip -n "$NS_B" addr add fd77::2/64 dev nslb-b nodad
	local ns
	for ns in "$NS_A" "$NS_B"; do
		ip -n "$ns" link set lo up
	done
	ip -n "$NS_A" link set nslb-a up
	ip -n "$NS_B" link set nslb-b up
}

# The same joins as trace, the classic way: RX by skb pointer and socket, TX from the send
# syscall (by thread) to the driver (by skb pointer). sendto is syscall 44 on x86_64.
BPFTRACE_PROG='
tracepoint:raw_syscalls:sys_enter /args->id == 44/ { @st[tid] = nsecs; }
tracepoint:net:net_dev_queue /@st[tid]/ { @e[args->skbaddr] = @st[tid]; @q[args->skbaddr] = nsecs; }
tracepoint:net:net_dev_start_xmit /@q[args->skbaddr]/ { @d[args->skbaddr] = nsecs; }
tracepoint:net:net_dev_xmit /@d[args->skbaddr]/ {
	@drv = hist(nsecs - @d[args->skbaddr]); @send = hist(nsecs - @e[args->skbaddr]);
	delete(@d[args->skbaddr]); delete(@q[args->skbaddr]); delete(@e[args->skbaddr]);
}
tracepoint:sock:sock_send_length /@st[tid]/ { delete(@st[tid]); }
tracepoint:skb:consume_skb /@q[args->skbaddr]/ { delete(@q[args->skbaddr]); }
tracepoint:net:netif_rx { @s[args->skbaddr] = nsecs; }
tracepoint:net:netif_receive_skb /@s[args->skbaddr]/ {
	@h = hist(nsecs - @s[args->skbaddr]); delete(@s[args->skbaddr]);
}
tracepoint:sock:sk_data_ready { @q[args->skaddr] = nsecs; }
tracepoint:sock:sock_recv_length /args->ret > 0 && @q[args->sk]/ {
	@r = hist(nsecs - @q[args->sk]); delete(@q[args->sk]);
}
END { clear(@s); clear(@q); clear(@st); clear(@e); clear(@d); }'

# Start MODE's tool in the background. Sets TOOL_PID (ours to reap) and TOOL_TPID (the
# process holding the programs: bpftrace under timeout, else the same).
TOOL_PID=""
TOOL_TPID=""
start_tool() { # MODE PREFIX
	case $1 in
	trace)
		"$BIN" trace --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B" --port "$PORT" --json \
			--duration "${TOOL_S}s" >"$2.out" 2>"$2.err" &
		;;
	empty)
		"$BIN" bench empty --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B" --duration "${TOOL_S}s" \
			>"$2.out" 2>"$2.err" &
		;;
	bpftrace)
		timeout -s INT "$((TOOL_S + 15))" bpftrace -q -e "$BPFTRACE_PROG" >"$2.out" 2>"$2.err" &
		;;
	softirq)
		"$BIN" softirq --json --duration "${TOOL_S}s" >"$2.out" 2>"$2.err" &
		;;
	esoftirq)
		"$BIN" bench empty --hooks softirq --duration "${TOOL_S}s" >"$2.out" 2>"$2.err" &
		;;
	netfilter)
		"$BIN" netfilter --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B" --json \
			--duration "${TOOL_S}s" >"$2.out" 2>"$2.err" &
		;;
	serve)
		"$BIN" serve --listen 127.0.0.1:29112 --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B" \
			--port "$PORT" --duration "${TOOL_S}s" >"$2.out" 2>"$2.err" &
		;;
	marker)
		"$BIN" marker --iface "nslb-a:egress@$NS_A" --iface "nslb-b:ingress@$NS_B" --port 8000 \
			--json --duration "${TOOL_S}s" >"$2.out" 2>"$2.err" &
		;;
	emarker)
		"$BIN" bench empty --hooks marker --iface "nslb-a:egress@$NS_A" --iface "nslb-b:ingress@$NS_B" \
			--duration "${TOOL_S}s" >"$2.out" 2>"$2.err" &
		;;
	enetfilter)
		"$BIN" bench empty --hooks netfilter --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B" \
			--duration "${TOOL_S}s" >"$2.out" 2>"$2.err" &
		;;
	esac
	TOOL_PID=$!
	TOOL_TPID=$TOOL_PID
	PIDS+=("$TOOL_PID")
	if [ "$1" = bpftrace ]; then
		local i child=""
		for ((i = 0; i < 50; i++)); do
			child=$(pgrep -P "$TOOL_PID" | head -n1 || true)
			[ -n "$child" ] && break
			sleep 0.1
		done
		TOOL_TPID=${child:-$TOOL_PID}
	fi
}

# Ready when attached: links (trace, empty) or all ten probes loaded (bpftrace, which
# compiles first). trace is given ~1.5 s, as a user would.
wait_tool() { # MODE PID
	case $1 in
	trace) sleep 1.5 && wait_fds "$2" link_type 1 100 ;;
	empty) wait_fds "$2" link_type 10 100 ;;
	bpftrace) wait_fds "$2" prog_tag 10 200 && sleep 0.5 ;;
	softirq | esoftirq) wait_fds "$2" link_type 4 100 ;;
	# 5 hooks x 2 families x first/last x 2 namespaces.
	netfilter | enetfilter) wait_fds "$2" link_type 40 100 ;;
	# Two tcx links: a's egress and b's ingress.
	marker | emarker) wait_fds "$2" link_type 2 100 ;;
	# trace's links plus softirq's and netfilter's, and a scrape while it runs.
	serve) sleep 1.5 && wait_fds "$2" link_type 60 100 && curl -s -o /dev/null http://127.0.0.1:29112/metrics ;;
	esac
}

SINK_PID=""
start_sink() { # PREFIX SECONDS
	ip netns exec "$NS_B" "$LOAD" --timeout "$((FLOOD_S + 20))" udp-sink \
		--bind "$DST:$PORT" --seconds "$2" >"$1.sink" 2>"$1.sink.err" &
	SINK_PID=$!
	PIDS+=("$SINK_PID")
	local i
	for ((i = 0; i < 50; i++)); do
		grep -q READY "$1.sink" 2>/dev/null && break
		sleep 0.1
	done
}

flood() { # OUTFILE SECONDS
	ip netns exec "$NS_A" "$LOAD" --timeout "$(($2 + 10))" udp-flood \
		--to "$DST:$PORT" --seconds "$2" --size 64 >"$1" 2>"$1.err" || true
}

stats() { sysctl -qw kernel.bpf_stats_enabled="$1"; }

# One flood, with MODE's tool attached (or none for baseline). Appends a line to runs.jsonl.
run_mode() { # ROUND MODE PAIR
	local round=$1 mode=$2 p="$WORK/r$1-$2-$3" ok=1 hwm=0 tpid=""
	log "round $round: $mode"
	if [ "$mode" != baseline ]; then
		start_tool "$mode" "$p"
		tpid=$TOOL_TPID
		wait_tool "$mode" "$tpid" || ok=0
		[ "$ok" = 1 ] || log "$mode did not attach (see $p.err)"
	fi
	start_sink "$p" "$SINK_S"
	flood "$p.flood" "$FLOOD_S"
	stop_wait "$SINK_PID" 100
	forget_pid "$SINK_PID"
	if [ -n "$tpid" ]; then
		# Same traffic, a receiver included, so every hook sees what it saw above.
		start_sink "$p.st" "$STATS_SINK_S"
		stats 1
		snapshot "$tpid" "$p.s0"
		flood "$p.sflood" "$STATS_S"
		snapshot "$tpid" "$p.s1"
		stats 0
		stop_wait "$SINK_PID" 100
		forget_pid "$SINK_PID"
		kill -"$([ "$mode" = bpftrace ] && echo INT || echo TERM)" "$tpid" 2>/dev/null || true
		stop_wait "$tpid" 150
		hwm=$STOP_HWM
		[ "$tpid" != "$TOOL_PID" ] && stop_wait "$TOOL_PID" 50
		forget_pid "$TOOL_PID"
	fi
	printf '{"round":%d,"mode":"%s","prefix":"%s","attached":%d,"hwm_kb":%s}\n' \
		"$round" "$mode" "$p" "$ok" "${hwm:-0}" >>"$WORK/runs.jsonl"
}

# One iperf3 run, one stream a -> b for IPERF_S s; its JSON in PREFIX.iperf.
iperf_once() { # PREFIX
	ip netns exec "$NS_B" iperf3 -s -1 -B "$DST" >/dev/null 2>&1 &
	local srv=$!
	PIDS+=("$srv")
	sleep 0.5
	ip netns exec "$NS_A" timeout "$((IPERF_S + 20))" iperf3 -c "$DST" -t "$IPERF_S" -J \
		>"$1.iperf" 2>"$1.iperf.err" || true
	stop_wait "$srv" 50
	forget_pid "$srv"
}

# SIGTERM a tool started for one run (if any) and reap it.
stop_tool() { # PID
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || true
	stop_wait "$1" 150
	forget_pid "$1"
}

# TCP throughput (iperf3, one stream a -> b) with and without the full trace, interleaved.
iperf_pair() { # ROUND
	local m p tpid
	for m in baseline trace; do
		p="$WORK/i$1-$m"
		log "round $1: iperf3 $m"
		tpid=""
		if [ "$m" = trace ]; then
			"$BIN" trace --netns "/run/netns/$NS_A" --netns "/run/netns/$NS_B" --port 5201 --json \
				--duration "$((IPERF_S + 15))s" >"$p.out" 2>"$p.err" &
			tpid=$!
			PIDS+=("$tpid")
			sleep 1.5
			wait_fds "$tpid" link_type 1 100 || log "trace did not attach for iperf3"
		fi
		iperf_once "$p"
		stop_tool "$tpid"
		printf '{"round":%d,"mode":"%s","prefix":"%s"}\n' "$1" "$m" "$p" >>"$WORK/iperf.jsonl"
	done
}

# Busy and total jiffies of the whole machine (all CPUs), from /proc/stat.
cpu_jiffies() {
	awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# The congestion-signals collector under iperf3 -P 4 (a -> b): throughput and CPU time of
# the whole machine with and without it, interleaved; then, with it still attached, a short
# run with bpf_stats on for its per-program cost.
signals_pair() { # ROUND
	local m p tpid b0 t0 b1 t1 order="baseline signals"
	# Alternate which goes first: a warm-up or drift favours neither side.
	[ $(($1 % 2)) = 0 ] && order="signals baseline"
	for m in $order; do
		p="$WORK/g$1-$m"
		log "round $1: signals $m"
		tpid=""
		if [ "$m" = signals ]; then
			"$BIN" signals --interval 200ms --json --duration "$((2 * IPERF_S + 30))s" \
				>"$p.out" 2>"$p.err" &
			tpid=$!
			PIDS+=("$tpid")
			wait_fds "$tpid" link_type 7 100 || log "signals did not attach"
		fi
		ip netns exec "$NS_B" iperf3 -s -1 -B "$DST" >/dev/null 2>&1 &
		local srv=$!
		PIDS+=("$srv")
		sleep 0.5
		read -r b0 t0 < <(cpu_jiffies)
		ip netns exec "$NS_A" timeout "$((IPERF_S + 20))" iperf3 -c "$DST" -P 4 -t "$IPERF_S" -J \
			>"$p.iperf" 2>"$p.iperf.err" || true
		read -r b1 t1 < <(cpu_jiffies)
		stop_wait "$srv" 50
		forget_pid "$srv"
		if [ -n "$tpid" ]; then
			ip netns exec "$NS_B" iperf3 -s -1 -B "$DST" >/dev/null 2>&1 &
			srv=$!
			PIDS+=("$srv")
			sleep 0.5
			stats 1
			snapshot "$tpid" "$p.s0"
			ip netns exec "$NS_A" timeout 30 iperf3 -c "$DST" -P 4 -t 2 >/dev/null 2>&1 || true
			snapshot "$tpid" "$p.s1"
			stats 0
			stop_wait "$srv" 50
			forget_pid "$srv"
			kill -TERM "$tpid" 2>/dev/null || true
			stop_wait "$tpid" 150
			forget_pid "$tpid"
		fi
		printf '{"round":%d,"mode":"%s","prefix":"%s","busy":%d,"total":%d}\n' \
			"$1" "$m" "$p" "$((b1 - b0))" "$((t1 - t0))" >>"$WORK/signals.jsonl"
	done
}

# marker on a watched SSE stream: sse-source in a sends SSE_N events as fast as it can to
# sse-client in b, port 8000, captured at a's egress. Timed with bpf_stats off; then, with the
# tool still attached, the same stream again with bpf_stats on for its ns/run. emarker is the
# empty TC program on the same point.
sse_once() { # PREFIX
	local t0 t1 src
	ip netns exec "$NS_A" "$LOAD" --timeout 60 sse-source --bind 10.77.0.1:8000 --count "$SSE_N" \
		--interval-ms 0 >"$1.src" 2>"$1.src.err" &
	src=$!
	PIDS+=("$src")
	local i
	for ((i = 0; i < 50; i++)); do
		grep -q READY "$1.src" 2>/dev/null && break
		sleep 0.1
	done
	t0=$(date +%s%N)
	ip netns exec "$NS_B" "$LOAD" --timeout 60 sse-client --to 10.77.0.1:8000 --count "$SSE_N" \
		>"$1.cli" 2>"$1.cli.err" || true
	t1=$(date +%s%N)
	stop_wait "$src" 100
	forget_pid "$src"
	SSE_NS=$((t1 - t0))
}

marker_sse_pair() { # ROUND
	local m p tpid order="baseline marker emarker"
	[ $(($1 % 2)) = 0 ] && order="emarker marker baseline"
	for m in $order; do
		p="$WORK/m$1-$m"
		log "round $1: marker SSE $m"
		tpid=""
		case $m in
		marker)
			"$BIN" marker --iface "nslb-a:egress@$NS_A" --port 8000 --json --duration 120s \
				>"$p.out" 2>"$p.err" &
			tpid=$!
			;;
		emarker)
			"$BIN" bench empty --hooks marker --iface "nslb-a:egress@$NS_A" --duration 120s \
				>"$p.out" 2>"$p.err" &
			tpid=$!
			;;
		esac
		if [ -n "$tpid" ]; then
			PIDS+=("$tpid")
			wait_fds "$tpid" link_type 1 100 || log "$m did not attach (see $p.err)"
		fi
		sse_once "$p"
		local timed=$SSE_NS
		if [ -n "$tpid" ]; then
			stats 1
			snapshot "$tpid" "$p.s0"
			sse_once "$p.st"
			snapshot "$tpid" "$p.s1"
			stats 0
			stop_tool "$tpid"
		fi
		printf '{"round":%d,"mode":"%s","prefix":"%s","ns":%d,"events":%d}\n' \
			"$1" "$m" "$p" "$timed" "$SSE_N" >>"$WORK/marker-sse.jsonl"
	done
}

# marker on a watched bulk stream (iperf3 on its own port): the worst case, every payload byte
# copied to user space and scanned.
marker_iperf_pair() { # ROUND
	local m p tpid order="baseline marker"
	[ $(($1 % 2)) = 0 ] && order="marker baseline"
	for m in $order; do
		p="$WORK/mi$1-$m"
		log "round $1: marker iperf3 $m"
		tpid=""
		if [ "$m" = marker ]; then
			"$BIN" marker --iface "nslb-a:egress@$NS_A" --port 5201 --json \
				--duration "$((IPERF_S + 30))s" >"$p.out" 2>"$p.err" &
			tpid=$!
			PIDS+=("$tpid")
			wait_fds "$tpid" link_type 1 100 || log "marker did not attach for iperf3"
		fi
		iperf_once "$p"
		stop_tool "$tpid"
		printf '{"round":%d,"mode":"%s","prefix":"%s"}\n' "$1" "$m" "$p" >>"$WORK/marker-iperf.jsonl"
	done
}

frontend() {
	local i
	for i in 1 2 3; do
		log "frontend $i"
		"$BIN" bench frontend --events "$FRONTEND_EVENTS" >>"$WORK/frontend.jsonl"
		"$BIN" bench frontend --events "$FRONTEND_EVENTS" --prometheus >>"$WORK/frontend-prom.jsonl"
	done
}

# The rule-count sweep: its own namespaces, rules and traffic (see src/cmd/bench/netfilter.rs).
nf_sweep() {
	if ! command -v iptables-legacy-restore >/dev/null || ! command -v nft >/dev/null; then
		log "iptables or nftables not installed: the netfilter sweep is skipped"
		return
	fi
	log "netfilter sweep: rules $NF_RULES, backends $NF_BACKENDS, $NF_RATE/s for ${NF_S}s each"
	mkdir -p "$(dirname "$NF_PLOT")"
	"$BIN" bench netfilter --rules "$NF_RULES" --backend "$NF_BACKENDS" --rate "$NF_RATE" \
		--duration "$NF_S" --json --csv "$WORK/nf.csv" --plot "$NF_PLOT" \
		>"$WORK/nf.jsonl" 2>"$WORK/nf.err" || log "netfilter sweep failed (see $WORK/nf.err)"
}

main() {
	preflight
	local started=$SECONDS
	WORK=$(mktemp -d /tmp/nsl-bench.XXXXXX)
	setup_kernel
	setup_netns
	local have_bpftrace=1 r m i
	command -v bpftrace >/dev/null || have_bpftrace=0
	[ "$have_bpftrace" = 1 ] || log "bpftrace not found: its column is skipped"
	for ((r = 1; r <= ROUNDS; r++)); do
		i=0
		for m in trace empty bpftrace softirq esoftirq netfilter enetfilter serve marker emarker; do
			[ "$m" = bpftrace ] && [ "$have_bpftrace" = 0 ] && continue
			i=$((i + 1))
			run_mode "$r" baseline "$i"
			run_mode "$r" "$m" "$i"
		done
	done
	if command -v iperf3 >/dev/null; then
		for ((r = 1; r <= ROUNDS; r++)); do
			iperf_pair "$r"
		done
		for ((r = 1; r <= ROUNDS; r++)); do
			signals_pair "$r"
		done
		for ((r = 1; r <= ROUNDS; r++)); do
			marker_iperf_pair "$r"
		done
	else
		log "iperf3 not found: the TCP throughput and signals tables are skipped"
	fi
	for ((r = 1; r <= ROUNDS; r++)); do
		marker_sse_pair "$r"
	done
	frontend
	nf_sweep
	meta_json >"$WORK/meta.json"
	python3 -B scripts/bench_report.py "$WORK" "$OUT" "$have_bpftrace" "$((SECONDS - started))"
	log "wrote $OUT"
	DONE=1
}

# Facts about this run, for the report header.
meta_json() {
	local commit
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
		commit="$commit (uncommitted changes)"
	fi
	BENCH_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" \
		BENCH_KERNEL="$(uname -r)" \
		BENCH_COMMIT="$commit" \
		BENCH_CPU="$(nproc) x $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" \
		BENCH_BPFTOOL="$(bpftool version 2>/dev/null | head -n1)" \
		BENCH_BPFTRACE="$(bpftrace --version 2>/dev/null || echo absent)" \
		BENCH_ROUNDS="$ROUNDS" BENCH_FLOOD_S="$FLOOD_S" BENCH_STATS_S="$STATS_S" \
		BENCH_SINK_S="$SINK_S" BENCH_PORT="$PORT" BENCH_FRONTEND_EVENTS="$FRONTEND_EVENTS" \
		BENCH_IPERF_S="$IPERF_S" BENCH_SSE_N="$SSE_N" BENCH_NF_RULES="$NF_RULES" \
		BENCH_NF_BACKENDS="$NF_BACKENDS" BENCH_NF_RATE="$NF_RATE" BENCH_NF_S="$NF_S" \
		BENCH_NF_PLOT="$NF_PLOT" \
		python3 -B scripts/bench_util.py meta
}

main "$@"
