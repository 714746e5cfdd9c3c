#!/usr/bin/env bash
# The design card's first commands, as a user types them: `cargo run --release -- trace` and
# `cargo run --release -- --json` run netstack-lat (Cargo.toml's default-run) and end with a
# summary. Part of `make test` (after the cargo test run: cargo's build lock is free then).
set -euo pipefail
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for args in "trace --duration 1s --json" "--json --duration 1s"; do
	# shellcheck disable=SC2086
	cargo run --release --quiet -- $args >"$out"
	if ! grep -q '"type":"summary"' "$out"; then
		echo "cargo run --release -- $args: no summary line" >&2
		cat "$out" >&2
		exit 1
	fi
	echo "cargo run --release -- $args: ok"
done
