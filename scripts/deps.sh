#!/usr/bin/env bash
# Install what netstack-lat needs to build, test and benchmark, and nothing that is already there.
# Idempotent: when every package is installed, apt-get is not called at all (no `apt-get update`).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
	clang llvm libelf-dev zlib1g-dev pkg-config make
	iproute2 ethtool bpftool bpftrace iperf3 clang-format
	file util-linux procps iptables nftables prometheus python3-venv pyflakes3 curl
	qemu-system-x86 busybox-static cpio xz-utils
)

if [ "$(id -u)" -eq 0 ]; then
	SUDO=()
else
	SUDO=(sudo)
fi

installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "deps: missing packages (${missing[*]}) and no apt-get: install them by hand" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}"
	"${SUDO[@]}" apt-get update
	# The prometheus package would start a server on :9090 where an init system runs it;
	# the tests start their own. policy-rc.d (exit 101) tells maintainer scripts not to
	# start services; one made here is removed again.
	made_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
		"${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
	fi
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends "${missing[@]}"
	if [ "$made_policy" = 1 ]; then
		"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
	fi
else
	echo "deps: system packages present"
fi

# Rust: the toolchain comes from rustup (cargo on PATH or in ~/.cargo/bin).
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
	cat >&2 <<'MSG'
deps: error: no Rust toolchain (cargo is neither on PATH nor in ~/.cargo/bin).
      Install one with rustup (https://rustup.rs):
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
      then run `make deps` again.
MSG
	exit 1
fi

if command -v rustup >/dev/null 2>&1; then
	want=()
	have=$(rustup component list --installed 2>/dev/null || true)
	for c in rustfmt clippy; do
		grep -q "^$c" <<<"$have" || want+=("$c")
	done
	if [ "${#want[@]}" -gt 0 ]; then
		echo "deps: adding Rust components ${want[*]}"
		if ! rustup component add "${want[@]}"; then
			echo "deps: warning: could not add ${want[*]} (offline?): make lint will fail" >&2
		fi
	fi
else
	for tool in cargo-fmt cargo-clippy; do
		command -v "$tool" >/dev/null 2>&1 ||
			echo "deps: warning: $tool not found and no rustup to add it: make lint will fail" >&2
	done
fi

echo "deps: $(cargo --version)"
