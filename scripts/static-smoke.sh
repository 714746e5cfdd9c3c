#!/usr/bin/env bash
# CI: the fully static binary (make static) is static and works: probes, and a short trace
# that must end with its summary and leave no BPF program behind.
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
summary=$("$BIN" trace --duration 2 --json | tail -n 1)
case $summary in
*'"type":"summary"'*) echo "static-smoke: trace ran and summarised" ;;
*) echo "static-smoke: no trace summary: $summary" >&2; exit 1 ;;
esac
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
