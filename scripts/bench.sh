#!/usr/bin/env bash
# `make bench`: what netstack-lat costs, measured on this machine, written to BENCHMARKS.md.
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
# each marker SSE run), OUT (BENCHMARKS.md),
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
	python3 - "$WORK" "$OUT" "$have_bpftrace" "$((SECONDS - started))" <<'PY'
import json, os, statistics as st, sys

work, out, have_bt, elapsed = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
meta = json.load(open(os.path.join(work, "meta.json")))
runs = [json.loads(l) for l in open(os.path.join(work, "runs.jsonl"))]

BT_TP = {  # traced program -> bpftrace tracepoint probe (bpftool shows 15 characters)
    "rx_driver_netif_rx": "netif_rx",
    "rx_netif_tp_btf": "netif_receive_skb",
    "rx_sockq_tp_btf": "sk_data_ready",
    "rx_read_tp_btf": "sock_recv_length",
    "tx_send_sys_enter": "sys_enter",
    "tx_send_end": "sock_send_length",
    "tx_qdisc_enq_queue": "net_dev_queue",
    "tx_driver_start": "net_dev_start_xmit",
    "tx_done_xmit": "net_dev_xmit",
    "tx_free_consume": "consume_skb",
}


def last_json(path):
    try:
        lines = [l for l in open(path) if l.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def prog_stats(prefix):
    """name -> (run_time_ns, run_cnt) during the flood, for the tool's own programs."""
    try:
        s0, s1 = (json.load(open(prefix + s)) for s in (".s0", ".s1"))
    except (OSError, ValueError):
        return {}
    ids = set(s0["ids"]) | set(s1["ids"])
    before = {p["id"]: p for p in s0["progs"] if p["id"] in ids}
    res = {}
    for p in s1["progs"]:
        if p["id"] not in ids or p["id"] not in before:
            continue
        b = before[p["id"]]
        dt = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
        dc = p.get("run_cnt", 0) - b.get("run_cnt", 0)
        t, c = res.get(p["name"], (0, 0))
        res[p["name"]] = (t + dt, c + dc)
    return res


for r in runs:
    p = r["prefix"]
    r["pps"] = last_json(p + ".sink").get("pps")
    r["sent_pps"] = last_json(p + ".flood").get("pps")
    r["stats_sent_pps"] = last_json(p + ".sflood").get("pps")
    r["stats"] = prog_stats(p) if r["mode"] != "baseline" else {}
    r["out"] = last_json(p + ".out") if r["mode"] != "baseline" else {}


def nsrun(t_c):
    t, c = t_c
    return t / c if c else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else None


def f(x, fmt="{:.0f}"):
    return "n/a" if x is None else fmt.format(x)


def ratio(a, b):
    return a / b if a is not None and b else None


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "**MISSED**")


tools = ["trace", "empty"] + (["bpftrace"] if have_bt else []) + ["softirq", "esoftirq",
                                                                  "netfilter", "enetfilter", "serve",
                                                                  "marker", "emarker"]
by = {m: [r for r in runs if r["mode"] == m] for m in tools}
# Pairs: each tool run with the baseline run just before it.
pairs = []
for i, r in enumerate(runs):
    if r["mode"] != "baseline" and i > 0 and runs[i - 1]["mode"] == "baseline":
        pairs.append((r["round"], r["mode"], runs[i - 1]["pps"], r["pps"]))

trace_names = sorted({n for r in by["trace"] for n in r["stats"]})
SOFTIRQ_EMPTY = {"softirq_raise": "empty_rx_softirq_raise", "softirq_entry": "empty_rx_softirq_entry",
                 "softirq_exit": "empty_softirq_exit", "softirq_napi_poll": "empty_softirq_napi_poll"}


def per_round(mode, name):
    return [nsrun(r["stats"][name]) if name in r["stats"] else None for r in by[mode]]


def runs_per_s(mode, name):
    xs = [r["stats"][name][1] / meta["stats_s"] for r in by[mode] if name in r["stats"]]
    return med(xs)


L = []
L.append("# Benchmarks\n")
L.append("Generated by `make bench` (scripts/bench.sh); overwritten on every run. "
         "Timings on a shared 2-core VM are noisy: compare the pairs and medians, not single numbers.\n")
L.append("| | |\n|---|---|")
for k in ("date", "kernel", "commit", "cpu", "bpftool", "bpftrace"):
    L.append(f"| {k} | {meta.get(k, 'n/a')} |")
L.append(f"| command | `make bench` (= `cargo build --release` + `bash scripts/bench.sh`) |")
L.append(f"| rounds | {meta['rounds']} x (baseline, trace, baseline, empty, baseline, bpftrace, baseline, softirq, baseline, esoftirq, baseline, netfilter, baseline, enetfilter, baseline, serve, baseline, marker, baseline, emarker), "
         f"{meta['flood_s']} s throughput flood + {meta['stats_s']} s bpf_stats flood per tool run; "
         f"bench took {elapsed} s |\n")

L.append("## Method\n")
L.append(f"""- Topology: namespaces `nsl-bench-a` (10.77.0.1/24, fd77::1/64) and `nsl-bench-b` (10.77.0.2/24,
  fd77::2/64) joined by a veth. `nsl-load udp-flood --size 64` sends from a to 10.77.0.2:{meta['port']} for
  {meta['flood_s']} s; `nsl-load udp-sink` in b counts for {meta['sink_s']} s from its first datagram. The sink's
  pps is the throughput.
- Modes: **baseline** (nothing attached); **trace** (`netstack-lat trace --netns /run/netns/nsl-bench-a
  --netns /run/netns/nsl-bench-b --port {meta['port']} --json`: the full RX+TX trace, TX in the sender's
  namespace and RX in the receiver's, started ~1.5 s before the flood); **empty** (`netstack-lat bench
  empty`: programs that only increment a per-CPU counter, on exactly trace's RX and TX hooks: the
  floor);
  **bpftrace** (0.17: the same joins on classic tracepoints: RX by skb pointer and by socket, TX from
  the sendto syscall by thread to net_dev_queue/start_xmit/xmit by skb pointer; it has no netfilter
  hook, so tx_transport/tx_nf_done/rx_ip/rx_transport have no bpftrace column).
- Each tool run follows its own baseline run, so each pps ratio compares neighbours in time.
- Throughput floods run with `kernel.bpf_stats_enabled=0`, baseline and tools alike, so pps is not
  slowed by bpf_stats' own clock reads.
- Per-program cost: with the tool still attached, a second {meta['stats_s']} s flood runs with
  `kernel.bpf_stats_enabled=1`; `bpftool prog show --json` right before and right after it;
  ns/run = delta run_time_ns / delta run_cnt. Programs are the tool's own (prog ids from its
  /proc/PID/fdinfo), so other BPF users on the machine do not leak in. bpf_stats' own timing is in
  every ns/run figure, the empty programs' included (that is why they do not show ~0).
- tx_send_sys_enter runs on every system call of the machine (it only keeps the entry time of
  send calls), so its runs/s is above the packet rate; "ns per packet" divides all programs' time by
  the datagrams (netif_receive_skb runs).
- On a veth the sender's CPU also runs the receive path (netif_rx -> backlog -> socket in its own
  softirq), so every nanosecond of BPF per packet comes straight off the flood's rate: at ~650k pps
  the whole path has ~1.5 us per packet. The empty programs' pps ratio is the floor that any tool
  on these hooks pays here. trace also loads the GRO and netif_receive_skb_entry programs; veth
  traffic does not pass those hooks, hence 0 runs.
- trace's peak RSS is VmHWM from /proc/PID/status, read until it exits; lost events from its
  summary (both floods).
- Frontend: `netstack-lat bench frontend --events {meta['frontend_events']}` (decode + join of synthetic
  chain/read records over 1000 UDP and TCP sockets, one thread), three runs.
""")

L.append("## Per-hook cost (ns per run, median of rounds)\n")
L.append("| hook (trace program) | runs/s | trace | empty | trace/empty (<= 1.5) | bpftrace | trace/bpftrace (<= 0.33) |")
L.append("|---|---|---|---|---|---|---|")
missed = []
for n in trace_names:
    t = med(per_round("trace", n))
    e = med(per_round("empty", "empty_" + n))
    bt_name = BT_TP.get(n)
    b = med(per_round("bpftrace", bt_name[:15])) if have_bt and bt_name else None
    re_, rb = ratio(t, e), ratio(t, b)
    ok_e = None if re_ is None else re_ <= 1.5
    ok_b = None if rb is None else rb <= 1 / 3
    if ok_e is False:
        missed.append(f"{n}: trace/empty {re_:.2f}x > 1.5x")
    if ok_b is False:
        missed.append(f"{n}: trace/bpftrace {rb:.2f} > 1/3")
    fired = (runs_per_s("trace", n) or 0) > 0
    bcol = f"{f(b)} (`{bt_name}`)" if b is not None else (
        "skipped" if not have_bt else "no equivalent" if fired else "did not fire")
    L.append(f"| {n} | {f(runs_per_s('trace', n))} | {f(t)} | {f(e)} | {f(re_, '{:.2f}x')} {verdict(ok_e) if re_ is not None else ''} "
             f"| {bcol} | {f(rb, '{:.2f}')} {verdict(ok_b) if rb is not None else ''} |")


PACKET_HOOK = {"trace": "rx_netif_tp_btf", "empty": "empty_rx_netif_tp_btf",
               "bpftrace": "netif_receive_skb"[:15]}


def per_packet(mode):
    """All of a tool's programs together: run time per packet (packets = netif_receive_skb
    runs: each datagram passes it once; sys_enter also runs for every other syscall)."""
    out = []
    for r in by.get(mode, []):
        st_ = r["stats"]
        pk = st_.get(PACKET_HOOK[mode], (0, 0))[1]
        out.append(sum(t for t, _ in st_.values()) / pk if pk else None)
    return med(out)


tp, ep, bp = per_packet("trace"), per_packet("empty"), per_packet("bpftrace") if have_bt else None
L.append(f"| **all hooks, ns per packet** | | {f(tp)} | {f(ep)} | {f(ratio(tp, ep), '{:.2f}x')} "
         f"| {f(bp)} | {f(ratio(tp, bp), '{:.2f}')} |")
if not have_bt:
    L.append("\nbpftrace is not installed: its columns are skipped.")
L.append("\nA hook with 0 runs/s did not fire for this traffic (e.g. GRO entry on a veth without NAPI); "
         "its ns/run is n/a.\n")

L.append("## softirq (`netstack-lat softirq`, NET_RX + NET_TX, in-kernel histograms)\n")
L.append("Its programs run on every softirq raise, entry and exit of the machine (all vectors; "
         "only the chosen ones do work) and on every NAPI poll. esoftirq = do-nothing programs on "
         "the same four hooks (`netstack-lat bench empty --hooks softirq`).\n")
L.append("| program | runs/s | softirq ns/run | empty ns/run | ratio (<= 1.5) |")
L.append("|---|---|---|---|---|")
for n, e in SOFTIRQ_EMPTY.items():
    s_ = med(per_round("softirq", n))
    e_ = med(per_round("esoftirq", e))
    q = ratio(s_, e_)
    if q is not None and q > 1.5:
        missed.append(f"softirq {n}: {q:.2f}x an empty program > 1.5x")
    L.append(f"| {n} | {f(runs_per_s('softirq', n))} | {f(s_)} | {f(e_)} | "
             f"{f(q, '{:.2f}x')} {verdict(None if q is None else q <= 1.5) if q is not None else ''} |")
L.append("")

L.append("## netfilter (`netstack-lat netfilter`: the bracket on all five hooks, IPv4 and IPv6)\n")
L.append("nf_first runs at the first priority a netfilter link may take and nf_last at the last, on "
         "every hook of both namespaces (the flood passes LOCAL_OUT and POST_ROUTING in a, PRE_ROUTING "
         "and LOCAL_IN in b: 4 brackets per datagram); nf_drop runs on every kfree_skb. enetfilter = "
         "the same links with do-nothing programs (`netstack-lat bench empty --hooks netfilter`). "
         "bpftrace 0.17 has no netfilter hook and this kernel no kprobes for ipt_do_table/nft_do_chain, "
         "so there is no bpftrace column.\n")
L.append("| program | runs/s | netfilter ns/run | empty ns/run | ratio (<= 1.5) |")
L.append("|---|---|---|---|---|")
for n, e in (("nf_first", "empty_nf_first"), ("nf_last", "empty_nf_last"), ("nf_drop", "empty_nf_drop")):
    s_ = med(per_round("netfilter", n))
    e_ = med(per_round("enetfilter", e)) if e else None
    q = ratio(s_, e_)
    if q is not None and q > 1.5:
        missed.append(f"netfilter {n}: {q:.2f}x an empty program > 1.5x")
    L.append(f"| {n} | {f(runs_per_s('netfilter', n))} | {f(s_)} | {f(e_)} | "
             f"{f(q, '{:.2f}x')} {verdict(None if q is None else q <= 1.5) if q is not None else ''} |")
L.append("")

steps = []
try:
    steps = [json.loads(l) for l in open(os.path.join(work, "nf.jsonl")) if '"step"' in l]
except (OSError, ValueError):
    pass
if steps:
    backends = list(dict.fromkeys(s["backend"] for s in steps))
    rules = sorted({s["rules"] for s in steps})
    L.append("## netfilter rule walk: iptables vs nftables (`bench netfilter`)\n")
    L.append(f"`netstack-lat bench netfilter --rules {meta['nf_rules']} --backend {meta['nf_backends']} "
             f"--rate {meta['nf_rate']} --duration {meta['nf_s']} --csv FILE --plot {meta['nf_plot']}`: "
             "per step, fresh namespaces, kube-proxy-shaped NAT rules (N dummy services ahead of the "
             "probed one) loaded with the real tools, UDP to the probed service with scrambled source "
             "ports, PRE_ROUTING bracket time per packet (conntrack + NAT table walk + DNAT). "
             f"Plot: [{meta['nf_plot']}]({meta['nf_plot']}).\n")
    head = "| rules | " + " | ".join(f"{b} avg / p50 / p99 us" for b in backends) + " |"
    L.append(head)
    L.append("|---|" + "---|" * len(backends))
    for n in rules:
        cells = []
        for b in backends:
            s = next((s for s in steps if s["rules"] == n and s["backend"] == b), None)
            cells.append("-" if s is None else f"{s['avg_us']:.2f} / {s['p50_us']:.2f} / {s['p99_us']:.2f}")
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L.append("\n| backend | rules | measured / sent | installed rules | install s |")
    L.append("|---|---|---|---|---|")
    for s in steps:
        L.append(f"| {s['backend']} | {s['rules']} | {s['count']} / {s['sent']} | {s['installed_rules']} | {s['install_s']:.2f} |")
    L.append("")

L.append("## Throughput (sink pps, each tool run against the baseline just before it)\n")
L.append("| round | tool | baseline pps | with tool pps | ratio (trace >= 0.97) |")
L.append("|---|---|---|---|---|")
ratios = {m: [] for m in tools}
for rnd, m, b, w in pairs:
    q = ratio(w, b)
    ratios[m].append(q)
    L.append(f"| {rnd} | {m} | {f(b)} | {f(w)} | {f(q, '{:.3f}')} |")
L.append("")
L.append("| tool | median ratio | target |")
L.append("|---|---|---|")
for m in tools:
    q = med(ratios[m])
    tgt = ">= 0.97 " + verdict(None if q is None else q >= 0.97) if m == "trace" else "(reference)"
    if m == "trace" and q is not None and q < 0.97:
        floor = med(ratios.get("empty", []))
        missed.append(f"trace throughput ratio {q:.3f} < 0.97 (do-nothing programs on the same hooks: "
                      f"{f(floor, '{:.3f}')})")
    L.append(f"| {m} | {f(q, '{:.3f}')} | {tgt} |")
L.append("")

iperf_runs = []
try:
    iperf_runs = [json.loads(l) for l in open(os.path.join(work, "iperf.jsonl"))]
except OSError:
    pass
if iperf_runs:
    def gbps(prefix):
        try:
            v = json.load(open(prefix + ".iperf"))
            return v["end"]["sum_received"]["bits_per_second"] / 1e9
        except (OSError, ValueError, KeyError):
            return None
    L.append(f"## TCP throughput (iperf3, one stream, {meta['iperf_s']} s, full RX+TX trace on port 5201)\n")
    L.append("| round | baseline Gbit/s | with trace Gbit/s | ratio (>= 0.99) |")
    L.append("|---|---|---|---|")
    iq = []
    for rnd in sorted({r["round"] for r in iperf_runs}):
        b = next((gbps(r["prefix"]) for r in iperf_runs if r["round"] == rnd and r["mode"] == "baseline"), None)
        w = next((gbps(r["prefix"]) for r in iperf_runs if r["round"] == rnd and r["mode"] == "trace"), None)
        q = ratio(w, b)
        iq.append(q)
        L.append(f"| {rnd} | {f(b, '{:.2f}')} | {f(w, '{:.2f}')} | {f(q, '{:.3f}')} |")
    qm = med(iq)
    if qm is not None and qm < 0.99:
        missed.append(f"TCP iperf3 throughput ratio {qm:.3f} < 0.99")
    L.append(f"\nMedian ratio: {f(qm, '{:.3f}')} (target >= 0.99: {verdict(None if qm is None else qm >= 0.99)}). "
             "Segments are TSO skbs of up to 64 KB; the cost is per segment, ACK, read and write call, and rx_sockq, rx_read and tx_send_end read socket fields that the other CPU keeps writing at this rate (their ns/run is several times the UDP flood's).\n")

sig_runs = []
try:
    sig_runs = [json.loads(l) for l in open(os.path.join(work, "signals.jsonl"))]
except OSError:
    pass
if sig_runs:
    def iperf_bytes(prefix):
        try:
            v = json.load(open(prefix + ".iperf"))
            return v["end"]["sum_received"]["bytes"], v["end"]["sum_received"]["bits_per_second"] / 1e9
        except (OSError, ValueError, KeyError):
            return None, None
    L.append(f"## Congestion signals (`netstack-lat signals`, every hook, no filter) under iperf3 -P 4, {meta['iperf_s']} s\n")
    L.append("Whole-machine CPU from /proc/stat over each iperf3 run; CPU per GB is busy CPU-seconds per GB received "
             "(iperf3 over a veth is CPU-bound, so extra cost shows there and in throughput, not as idle time).\n")
    L.append("| round | baseline Gbit/s | with signals Gbit/s | ratio | baseline CPU s/GB | with signals CPU s/GB | CPU overhead |")
    L.append("|---|---|---|---|---|---|---|")
    hz = os.sysconf("SC_CLK_TCK")
    overs = []
    for rnd in sorted({r["round"] for r in sig_runs}):
        row = {}
        for r in sig_runs:
            if r["round"] == rnd:
                nbytes, g = iperf_bytes(r["prefix"])
                row[r["mode"]] = (g, (r["busy"] / hz) / (nbytes / 1e9) if nbytes else None)
        (bg, bc), (sg, sc) = row.get("baseline", (None, None)), row.get("signals", (None, None))
        over = None if bc is None or sc is None else sc / bc - 1
        overs.append(over)
        L.append(f"| {rnd} | {f(bg, '{:.2f}')} | {f(sg, '{:.2f}')} | {f(ratio(sg, bg), '{:.3f}')} | "
                 f"{f(bc, '{:.3f}')} | {f(sc, '{:.3f}')} | {f(None if over is None else over * 100, '{:+.2f}')} % |")
    om = med(overs)
    if om is not None and om > 0.01:
        missed.append(f"signals CPU overhead {om * 100:.2f} % > 1 %")
    L.append(f"\nMedian CPU overhead: {f(None if om is None else om * 100, '{:+.2f}')} % (target < 1 %: "
             f"{verdict(None if om is None else om <= 0.01)}).\n")
    L.append("Per program (bpf_stats, 2 s iperf3 -P 4 with the collector attached); the BPF share is "
             "sum(runs x ns/run) over the 2 s and all CPUs, the bottom-up CPU cost that the noisy "
             "whole-machine figures above cannot resolve:\n")
    L.append("| round | program | runs | ns/run |")
    L.append("|---|---|---|---|")
    shares = []
    ncpu = os.cpu_count() or 1
    for r in sig_runs:
        if r["mode"] != "signals":
            continue
        try:
            s0, s1 = json.load(open(r["prefix"] + ".s0")), json.load(open(r["prefix"] + ".s1"))
        except (OSError, ValueError):
            continue
        ids = set(s1["ids"])
        before = {p["id"]: p for p in s0["progs"]}
        busy = 0
        for p1 in s1["progs"]:
            if p1["id"] not in ids:
                continue
            p0 = before.get(p1["id"], {})
            n = p1.get("run_cnt", 0) - p0.get("run_cnt", 0)
            t = p1.get("run_time_ns", 0) - p0.get("run_time_ns", 0)
            busy += t
            L.append(f"| {r['round']} | {p1.get('name', '?')} | {n} | {f(t / n if n else None, '{:.0f}')} |")
        shares.append(busy / (2e9 * ncpu))
    sm = med(shares)
    if sm is not None and sm > 0.01:
        missed.append(f"signals BPF CPU share {sm * 100:.2f} % > 1 %")
    L.append(f"\nBPF CPU share per round: {', '.join(f'{x * 100:.2f} %' for x in shares)}; median "
             f"{f(None if sm is None else sm * 100, '{:.2f}')} % of {ncpu} CPUs (target < 1 %: "
             f"{verdict(None if sm is None else sm <= 0.01)}).\n")

L.append("## marker (`netstack-lat marker`: TC payload capture)\n")
L.append("**Unwatched traffic.** The UDP flood above passes marker's two capture points (a's egress, "
         "b's ingress; `--port 8000`, so no datagram is read): the cost every packet on a captured "
         "interface pays. emarker = empty TC programs on the same two points (`netstack-lat bench empty "
         "--hooks marker`). bpftrace 0.17 cannot attach at TC or read payloads, so there is no bpftrace "
         "column.\n")
L.append("| program | runs/s | marker ns/run | empty ns/run | ratio (<= 1.5) |")
L.append("|---|---|---|---|---|")
for n in ("marker_p0", "marker_p1"):
    s_ = med(per_round("marker", n))
    e_ = med(per_round("emarker", "empty_" + n))
    q = ratio(s_, e_)
    if q is not None and q > 1.5:
        missed.append(f"marker {n} (unwatched): {q:.2f}x an empty program > 1.5x")
    L.append(f"| {n} | {f(runs_per_s('marker', n))} | {f(s_)} | {f(e_)} | "
             f"{f(q, '{:.2f}x')} {verdict(None if q is None else q <= 1.5) if q is not None else ''} |")
L.append("\nThe flood's pps with marker and emarker attached are their rows of the throughput table.\n")

ms_runs = []
try:
    ms_runs = [json.loads(l) for l in open(os.path.join(work, "marker-sse.jsonl"))]
except OSError:
    pass
if ms_runs:
    L.append(f"**Watched SSE stream.** `nsl-load sse-source --count {meta['sse_n']} --interval-ms 0` in a to "
             "`sse-client` in b on port 8000, captured at a's egress (every event read, scanned and "
             "written as a JSON line); each round runs baseline, marker and emarker in alternating order. "
             "events/s from the client's wall time with bpf_stats off; ns/run from a second stream "
             "with bpf_stats on.\n")
    L.append("| round | baseline events/s | marker events/s | ratio | emarker events/s | marker_p0 ns/run | empty ns/run | ns/run ratio (<= 1.5) | sightings (of 2 x N) | lost events |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    sse_q, sse_r = [], []
    for rnd in sorted({r["round"] for r in ms_runs}):
        row = {r["mode"]: r for r in ms_runs if r["round"] == rnd}
        eps = {m: (row[m]["events"] / (row[m]["ns"] / 1e9) if m in row and row[m]["ns"] else None)
               for m in ("baseline", "marker", "emarker")}
        ps = {m: prog_stats(row[m]["prefix"]) for m in ("marker", "emarker") if m in row}
        mk = ps.get("marker", {}).get("marker_p0")
        em = ps.get("emarker", {}).get("empty_marker_p0")
        mk_ns = nsrun(mk) if mk else None
        em_ns = nsrun(em) if em else None
        q = ratio(eps["marker"], eps["baseline"])
        qr = ratio(mk_ns, em_ns)
        sse_q.append(q)
        sse_r.append(qr)
        out_ = last_json(row["marker"]["prefix"] + ".out") if "marker" in row else {}
        L.append(f"| {rnd} | {f(eps['baseline'])} | {f(eps['marker'])} | {f(q, '{:.3f}')} | {f(eps['emarker'])} | "
                 f"{f(mk_ns)} | {f(em_ns)} | {f(qr, '{:.2f}x')} | {out_.get('seen', 0) + out_.get('duplicates', 0) if out_ else 'n/a'} | {out_.get('lost_events', 'n/a')} |")
    qm, rm = med(sse_q), med(sse_r)
    if rm is not None and rm > 1.5:
        missed.append(f"marker_p0 on a watched SSE stream: {rm:.2f}x an empty TC program > 1.5x")
    L.append(f"\nMedian events/s ratio {f(qm, '{:.3f}')}; median ns/run ratio {f(rm, '{:.2f}x')} "
             f"(target <= 1.5x: {verdict(None if rm is None else rm <= 1.5)}). Sightings: the tool saw both "
             "streams (timed and bpf_stats) of N events each, the second one's as duplicates; 2 x N "
             "means none was lost. The ns/run ratio is per segment: marker parses the headers, reserves, "
             "copies the payload and submits, where the empty program only counts.\n")

mi_runs = []
try:
    mi_runs = [json.loads(l) for l in open(os.path.join(work, "marker-iperf.jsonl"))]
except OSError:
    pass
if mi_runs:
    def gbps2(prefix):
        try:
            v = json.load(open(prefix + ".iperf"))
            return v["end"]["sum_received"]["bits_per_second"] / 1e9
        except (OSError, ValueError, KeyError):
            return None
    L.append(f"**Watched bulk stream (worst case).** iperf3, one stream a -> b, {meta['iperf_s']} s, with "
             "marker watching its port 5201: every payload byte is copied to user space and scanned. "
             "marker is built for marker streams (SSE, a few kB/s to MB/s), not for bulk flows; this row "
             "says what watching one costs.\n")
    L.append("| round | baseline Gbit/s | with marker Gbit/s | ratio | bytes read | lost events |")
    L.append("|---|---|---|---|---|---|")
    for rnd in sorted({r["round"] for r in mi_runs}):
        row = {r["mode"]: r for r in mi_runs if r["round"] == rnd}
        b = gbps2(row["baseline"]["prefix"]) if "baseline" in row else None
        w = gbps2(row["marker"]["prefix"]) if "marker" in row else None
        o = last_json(row["marker"]["prefix"] + ".out") if "marker" in row else {}
        L.append(f"| {rnd} | {f(b, '{:.2f}')} | {f(w, '{:.2f}')} | {f(ratio(w, b), '{:.3f}')} | "
                 f"{o.get('bytes', 'n/a')} | {o.get('lost_events', 'n/a')} |")
    L.append("\nLost events are chunks the ring buffer had no room for: counted and shown in the "
             "summary, never silent.\n")

L.append("## trace: lost events and memory\n")
L.append("| round | attached | lost_events | RX packets joined | reads | TX packets | peak RSS (VmHWM) |")
L.append("|---|---|---|---|---|---|---|")
for r in by["trace"]:
    o = r["out"]
    j = o.get("join", {})
    L.append(f"| {r['round']} | {'yes' if r['attached'] else 'NO'} | {o.get('lost_events', 'n/a')} | "
             f"{j.get('chains', 'n/a')} | {j.get('reads', 'n/a')} | {j.get('tx_chains', 'n/a')} | "
             f"{r['hwm_kb'] / 1024:.1f} MB |")
rss = max((r["hwm_kb"] for r in by["trace"]), default=0) / 1024
lost = sum(r["out"].get("lost_events", 0) for r in by["trace"])
if rss > 64:
    missed.append(f"trace peak RSS {rss:.1f} MB > 64 MB")
L.append(f"\nPeak RSS over all rounds: {rss:.1f} MB (target <= 64 MB: {verdict(rss <= 64)}). "
         f"Lost events over all rounds: {lost}.\n")

fe = [json.loads(l) for l in open(os.path.join(work, "frontend.jsonl")) if l.strip()]
L.append("## Frontend (decode + join, one thread)\n")
L.append("| run | events | seconds | events/s |")
L.append("|---|---|---|---|")
for i, x in enumerate(fe, 1):
    L.append(f"| {i} | {x['events']} | {x['seconds']:.3f} | {x['events_per_s']:,.0f} |")
fm = med([x["events_per_s"] for x in fe])
if fm is not None and fm < 1e6:
    missed.append(f"frontend {fm:,.0f} events/s < 1M/s")
L.append(f"\nMedian: {f(fm, '{:,.0f}')} events/s (target >= 1,000,000/s: "
         f"{verdict(None if fm is None else fm >= 1e6)}).\n")

fp = [json.loads(l) for l in open(os.path.join(work, "frontend-prom.jsonl")) if l.strip()]
if fp:
    L.append("## Exporter (`--prometheus` / `serve`)\n")
    L.append("The join with the exporter's labelled span histograms kept (`bench frontend --prometheus`), "
             "and one scrape's work (families + text encoding) at the end:\n")
    L.append("| run | events/s with labels | events/s without (same round) | render ms | exposition bytes |")
    L.append("|---|---|---|---|---|")
    for i, x in enumerate(fp, 1):
        plain = fe[i - 1]["events_per_s"] if i - 1 < len(fe) else None
        L.append(f"| {i} | {x['events_per_s']:,.0f} | {f(plain, '{:,.0f}')} | {x.get('render_seconds', 0) * 1e3:.2f} | {x.get('exposition_bytes', 'n/a')} |")
    L.append("\n`serve` (trace + softirq + netfilter + the endpoint, scraped once per run) is the `serve` "
             "row of the throughput table.\n")

L.append("## Fallback hooks (fentry, kprobe)\n")
L.append("Not measured: this kernel has no kprobes (CONFIG_KPROBES unset) and refuses fentry programs "
         "(EPERM), so only the tracepoint, raw_tp and netfilter hooks above can run here. The fallbacks "
         "run in `make test-vm` (Debian 6.1 and 6.12 under qemu TCG), whose timings are emulation, not "
         "hardware: they prove the fallbacks correct (see README, Kernel reach), not their cost.\n")

L.append("## Targets missed\n")
L.extend([f"- {m}" for m in missed] or ["- none"])
L.append("")

L.append("## Raw rounds\n")
L.append("In run order. pps columns: the throughput flood (bpf_stats off); program columns: the "
         "bpf_stats flood that followed it with the tool still attached.\n")
L.append("| round | mode | sent pps | sink pps | stats flood sent pps | program | runs | ns/run |")
L.append("|---|---|---|---|---|---|---|---|")
for r in runs:
    head = (f"| {r['round']} | {r['mode']} | {f(r['sent_pps'])} | {f(r['pps'])} "
            f"| {f(r['stats_sent_pps']) if r['mode'] != 'baseline' else '-'} ")
    if not r["stats"]:
        L.append(head + "| - | - | - |")
    for n, tc in sorted(r["stats"].items()):
        L.append(head + f"| {n} | {tc[1]} | {f(nsrun(tc), '{:.1f}')} |")
L.append("")
open(out, "w").write("\n".join(L))
print("\n".join(L[L.index("## Targets missed\n"):L.index("## Raw rounds\n")]))
PY
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
	python3 - <<PY
import json
print(json.dumps({
    "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
    "kernel": "$(uname -r)",
    "commit": "$commit",
    "cpu": "$(nproc) x $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)",
    "bpftool": "$(bpftool version 2>/dev/null | head -n1)",
    "bpftrace": "$(bpftrace --version 2>/dev/null || echo absent)",
    "rounds": $ROUNDS, "flood_s": $FLOOD_S, "stats_s": $STATS_S, "sink_s": $SINK_S, "port": $PORT,
    "frontend_events": $FRONTEND_EVENTS, "iperf_s": $IPERF_S, "sse_n": $SSE_N,
    "nf_rules": "$NF_RULES", "nf_backends": "$NF_BACKENDS", "nf_rate": $NF_RATE, "nf_s": $NF_S,
    "nf_plot": "$NF_PLOT",
}))
PY
}

main "$@"
