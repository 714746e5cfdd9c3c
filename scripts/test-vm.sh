#!/usr/bin/env bash
# Boot Debian cloud kernels under qemu (TCG: no KVM needed) and run the static netstack-lat
# inside each guest. qemu exits 0 whatever the guest did, so pass/fail is read from markers
# that /init prints on the serial console.
#
# Env: KERNELS (apt packages, metapackages or concrete linux-image-<version>), NSL_BIN,
#      NSL_CACHE (kernel .deb cache), VM_CMD (guest command), VM_TIMEOUT (seconds per boot).
set -euo pipefail
cd "$(dirname "$0")/.."

KERNELS=${KERNELS:-"linux-image-cloud-amd64 linux-image-6.12-cloud-amd64"}
NSL_BIN=${NSL_BIN:-target/x86_64-unknown-linux-gnu/release/netstack-lat}
CACHE=${NSL_CACHE:-$HOME/.cache/netstack-lat}/kernels
VM_CMD=${VM_CMD:-/netstack-lat selftest --json}
VM_TIMEOUT=${VM_TIMEOUT:-240}
OUT=target/vm
MODULES="sch_ingress cls_bpf" # tc clsact and the BPF classifier; modules on Debian kernels
APPLETS="sh mount mkdir ip poweroff cat echo sleep insmod ls uname dmesg grep true false"

die() { echo "test-vm: $*" >&2; exit 1; }

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run \`make deps\`"
[ -x /bin/busybox ] || die "/bin/busybox not found (package busybox-static): run \`make deps\`"
# A dynamic busybox would find no libc in the initramfs; ldd fails on static executables.
! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox is dynamic: install busybox-static"
[ -x "$NSL_BIN" ] || die "$NSL_BIN missing: run \`make static\` (or set NSL_BIN)"
for t in apt-cache apt-get dpkg-deb cpio gzip xz timeout python3; do
	command -v "$t" >/dev/null || die "$t not found"
done

mkdir -p "$OUT" "$CACHE/x"
TMP=$(mktemp -d "$OUT/tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Metapackage -> concrete linux-image-<version> package. Asked each run because old versions
# leave the mirror; a concrete name (x.y.z in it) is used as is, so KERNELS can pin one.
image_dep() {
	{ apt-cache depends "$1" 2>/dev/null || true; } | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ && !n++ { print $2 }'
}
resolve() {
	local name=$1 pkg
	pkg=$(image_dep "$name")
	if [ -z "$pkg" ] && [[ $name =~ ^linux-image-[0-9]+\.[0-9]+\.[0-9]+ ]]; then
		pkg=$name
	elif [ -z "$pkg" ]; then
		apt-get update -qq >&2 || true
		pkg=$(image_dep "$name")
	fi
	[ -n "$pkg" ] || { echo "test-vm: cannot resolve $name to a linux-image package" >&2; return 1; }
	echo "$pkg"
}

# Download and extract into the cache once; later runs reuse $CACHE/x/<pkg>.
fetch() {
	local pkg=$1 debs
	[ -d "$CACHE/x/$pkg/boot" ] && return 0
	debs=("$CACHE/${pkg}_"*.deb)
	if [ ! -e "${debs[0]}" ]; then
		# As root apt warns that _apt cannot reach the directory: harmless.
		(cd "$CACHE" && apt-get download "$pkg") >&2 || return 1
		debs=("$CACHE/${pkg}_"*.deb)
	fi
	rm -rf "$CACHE/x/$pkg.part" "$CACHE/x/$pkg"
	dpkg-deb -x "${debs[-1]}" "$CACHE/x/$pkg.part" || return 1
	[ -d "$CACHE/x/$pkg.part/boot" ] || { echo "test-vm: $pkg has no /boot: not a kernel image" >&2; return 1; }
	mv "$CACHE/x/$pkg.part" "$CACHE/x/$pkg"
}

# The guest's /init: mounts what netstack-lat looks for, loads the modules, runs /cmd
# between markers and powers off. If poweroff fails, init exits, the kernel panics, and
# panic=-1 with -no-reboot ends qemu anyway.
write_init() {
	cat >"$1" <<'EOF'
#!/bin/sh
export PATH=/bin
m() { mkdir -p "$3"; mount -t "$1" "$2" "$3" || echo "NSL-VM: mount $1 on $3 failed"; }
m proc proc /proc
m sysfs sysfs /sys
m devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
m securityfs securityfs /sys/kernel/security
m tracefs tracefs /sys/kernel/tracing
m debugfs debugfs /sys/kernel/debug
m bpf bpf /sys/fs/bpf
m cgroup2 cgroup2 /sys/fs/cgroup
m tmpfs tmpfs /tmp
for k in /lib/modules/*.ko; do
	[ -e "$k" ] || continue
	insmod "$k" || echo "NSL-VM: insmod $k failed"
done
ip link set lo up || echo "NSL-VM: ip link set lo up failed"
echo "NSL-VM: kernel $(uname -r)"
echo NSL-VM-BEGIN
set +e
sh /cmd
rc=$?
echo "NSL-VM-END rc=$rc"
poweroff -f
EOF
	chmod 755 "$1"
}

# newc cpio (gzip) with busybox, the binary, the kernel's modules, /init and /cmd.
build_initrd() {
	local tree=$1 ver=$2 root=$3 out=$4 name k
	mkdir -p "$root"/{bin,lib/modules,proc,sys,dev,tmp}
	cp /bin/busybox "$root/bin/busybox"
	for a in $APPLETS; do ln -s busybox "$root/bin/$a"; done
	cp "$NSL_BIN" "$root/netstack-lat"
	for name in $MODULES; do
		k=$(find "$tree/lib/modules/$ver" \( -name "$name.ko" -o -name "$name.ko.xz" \) -print -quit)
		case $k in
		"") echo "  note: no $name module in $ver (built in?)" ;;
		*.xz) xz -dc "$k" >"$root/lib/modules/$name.ko" ;; # busybox insmod cannot read .xz
		*) cp "$k" "$root/lib/modules/$name.ko" ;;
		esac
	done
	write_init "$root/init"
	printf '%s\n' "$VM_CMD" >"$root/cmd"
	(cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$out"
}

# Sets VER and RES for one KERNELS entry. Called outside any `if`/`||` so that set -e still
# aborts on unexpected errors; an expected failure marks the kernel FAIL and returns 0.
run_one() {
	local name=$1 pkg tree vmlinuz ver log="$OUT/$1.log" rc=0
	RES[$name]=FAIL
	rm -f "$log" "$OUT/$name.json" # no stale results from an earlier run
	pkg=$(resolve "$name") || return 0
	fetch "$pkg" || { echo "test-vm: cannot fetch $pkg" >&2; return 0; }
	tree=$CACHE/x/$pkg
	vmlinuz=$(find "$tree/boot" -name 'vmlinuz-*' -print -quit)
	[ -n "$vmlinuz" ] || { echo "test-vm: no vmlinuz in $pkg" >&2; return 0; }
	ver=${vmlinuz##*/vmlinuz-}
	VER[$name]=$ver
	build_initrd "$tree" "$ver" "$TMP/$name" "$TMP/$name.cpio.gz"
	echo "test-vm: $name -> $pkg: booting $ver (timeout ${VM_TIMEOUT}s)"
	# -serial stdio gives CRLF line ends: strip them so the log greps cleanly.
	timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 1024 \
		-nodefaults -no-user-config -display none -serial stdio -no-reboot \
		-kernel "$vmlinuz" -initrd "$TMP/$name.cpio.gz" \
		-append "console=ttyS0 panic=-1 quiet" </dev/null 2>&1 | tr -d '\r' >"$log" || rc=$?
	sed -n '/^NSL-VM-BEGIN$/,/^NSL-VM-END /p' "$log" | grep '^{' >"$OUT/$name.json" || true
	if grep -q '^NSL-VM-END rc=0$' "$log"; then RES[$name]=pass; return 0; fi
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "test-vm: $name: timed out after ${VM_TIMEOUT}s" >&2
	elif grep -q '^NSL-VM-END rc=' "$log"; then
		echo "test-vm: $name: guest command failed: $(grep -m1 '^NSL-VM-END rc=' "$log")" >&2
	else
		echo "test-vm: $name: no NSL-VM-END marker (qemu rc=$rc)" >&2
	fi
	echo "--- last 40 lines of $log ---" >&2
	tail -n 40 "$log" >&2
	echo "---" >&2
}

# Wall seconds with one decimal since a start from now_us (EPOCHREALTIME digits: locale-proof).
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
since() { local us=$(($(now_us) - $1)); echo "$((us / 1000000)).$((us / 100000 % 10))"; }

declare -A VER RES SECS
start_all=$(now_us)
failed=0
for k in $KERNELS; do
	t0=$(now_us)
	VER[$k]='?'
	run_one "$k"
	[ "${RES[$k]}" = pass ] || failed=1
	SECS[$k]=$(since "$t0")
	echo "test-vm: $k ${VER[$k]} ${RES[$k]} ${SECS[$k]}s (log $OUT/$k.log)"
done

echo
printf '%-32s %-28s %-5s %6s\n' PACKAGE KERNEL RESULT SECS
for k in $KERNELS; do
	printf '%-32s %-28s %-5s %6s\n' "$k" "${VER[$k]}" "${RES[$k]}" "${SECS[$k]}"
done
# Each guest's selftest against what its kernel's BTF offers (tests/data/kernels.json), and
# the table of kernels x hook families in docs/selftest.md.
jsons=()
for k in $KERNELS; do
	[ -s "$OUT/$k.json" ] && jsons+=("$OUT/$k.json")
done
if [ "${#jsons[@]}" -gt 0 ]; then
	echo
	python3 scripts/kernel-check.py --table "${jsons[@]}" | tee "$OUT/kernels.md" || failed=1
fi
echo "test-vm: total $(since "$start_all")s"
exit "$failed"
