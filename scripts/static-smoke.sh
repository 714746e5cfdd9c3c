#!/usr/bin/env bash
# CI: the fully static binary (make static) is static and works: probes, and a short trace
# that must see the traffic it is sent, end with its summary and leave no BPF program behind.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/x86_64-unknown-linux-gnu/release/netstack-lat
[ -x "$BIN" ] || { echo "static-smoke: $BIN missing: run make static" >&2; exit 1; }

desc=$(file -b "$BIN")
echo "static-smoke: file: $desc"
case $desc in
*"statically linked"* | *"static-pie linked"*) ;;
*) echo "static-smoke: not a static executable" >&2; exit 1 ;;
esac
# ldd says "statically linked" (static-pie) or "not a dynamic executable"; never a library.
out=$(ldd "$BIN" 2>&1 || true)
echo "static-smoke: ldd: $(echo "$out" | tr -s ' \t\n' ' ')"
case $out in
*"=>"*) echo "static-smoke: ldd lists shared libraries" >&2; exit 1 ;;
*"statically linked"* | *"not a dynamic executable"*) ;;
*) echo "static-smoke: ldd gave no verdict" >&2; exit 1 ;;
esac

progs_before=$(bpftool prog show | grep -c '^[0-9]' || true)
"$BIN" probes >/dev/null
# A short trace with traffic of its own: 20 loopback datagrams (bash's /dev/udp) to a port
# nothing listens on, each one RX and one TX chain, which the summary must count.
out=$(mktemp)
"$BIN" trace --duration 3 --json --port 9399 >"$out" &
tpid=$!
sleep 1.5
for _ in $(seq 20); do echo x >/dev/udp/127.0.0.1/9399; done
wait "$tpid"
summary=$(tail -n 1 "$out")
rm -f "$out"
case $summary in
*'"type":"summary"'*) ;;
*) echo "static-smoke: no trace summary: $summary" >&2; exit 1 ;;
esac
counts=$(printf '%s' "$summary" | python3 -c 'import json,sys; j=json.load(sys.stdin)["join"]; print(j["chains"], j["tx_chains"])')
read -r rx tx <<<"$counts"
if [ "$rx" -ne 20 ] || [ "$tx" -ne 20 ]; then
	echo "static-smoke: 20 datagrams sent, trace counted $rx RX and $tx TX chains" >&2
	exit 1
fi
echo "static-smoke: trace ran, saw the 20 datagrams ($rx RX, $tx TX chains) and summarised"
# Programs are freed after an RCU grace period: wait a little for the count to settle.
for _ in $(seq 50); do
	[ "$(bpftool prog show | grep -c '^[0-9]' || true)" -le "$progs_before" ] && break
	sleep 0.1
done
if [ "$(bpftool prog show | grep -c '^[0-9]' || true)" -gt "$progs_before" ]; then
	echo "static-smoke: BPF programs left behind" >&2
	exit 1
fi
echo "static-smoke: ok"
