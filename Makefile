# netstack-lat: `make run` and `make test` are all a newcomer needs; both install what is missing.

CARGO ?= cargo
ARGS ?= --duration 10
export PATH := $(HOME)/.cargo/bin:$(PATH)

# Root needs no sudo (CI runs as root); everyone else does, for BPF.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

ARCH := $(shell uname -m)
BIN := target/release/netstack-lat
STATIC_TARGET := x86_64-unknown-linux-gnu

.PHONY: all deps build run test test-vm static bench soak lint fuzz vmlinux clean

all: build

deps:
	bash scripts/deps.sh

build: deps
	$(CARGO) build --release

# make run ARGS="--json --port 443"
run: deps build
	$(SUDO) ./$(BIN) trace $(ARGS)

# Unit tests, then every integration test including the privileged ones (#[ignore]d so a
# plain `cargo test` lists them as skipped): one at a time, they share the kernel; not being
# root fails them. Then the static binary on other kernels.
test: deps
	$(CARGO) test --release --lib --bins
	$(CARGO) build --release --examples
	$(CARGO) test --release --test '*' -- --test-threads=1 --include-ignored
	bash scripts/cargo-run.sh
	$(MAKE) test-vm

# The static binary's selftest inside Debian's 6.1 and 6.12 cloud kernels under qemu (TCG);
# make test-vm KERNELS="linux-image-cloud-amd64 linux-image-6.12-cloud-amd64 ..."
test-vm: deps static
	$(SUDO) env KERNELS="$(KERNELS)" bash scripts/test-vm.sh

static: deps
	LIBBPF_SYS_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu \
	RUSTFLAGS="-C target-feature=+crt-static" \
	$(CARGO) build --release --features static --target $(STATIC_TARGET)
	file target/$(STATIC_TARGET)/release/netstack-lat

bench: deps build
	bash scripts/bench.sh
	bash scripts/bench-netns.sh
	bash scripts/bench-serve.sh

# Every fuzz_* property (in the `fuzz` module at the end of the file it exercises) at 10^6
# cases; `make test` runs each at proptest's default 256. CPU only: no root, no BPF.
FUZZ_CASES ?= 1000000
fuzz: deps
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --lib fuzz_

# serve and trace for MINUTES under 50k packets/s of UDP and TCP with connection and
# namespace churn; fails on growth or uncounted loss. Results in bench/soak/.
MINUTES ?= 60
soak: deps build
	$(SUDO) env MINUTES=$(MINUTES) bash scripts/soak.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	clang-format --dry-run --Werror bpf/*.c bpf/*.h
	python3 -m py_compile scripts/*.py && rm -rf scripts/__pycache__
	pyflakes3 scripts/*.py
	$(CARGO) test --release --test layers

# Regenerate the committed vmlinux.h from the running kernel (see vmlinux/README.md).
vmlinux:
	mkdir -p vmlinux/$(ARCH)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux/$(ARCH)/vmlinux.h.tmp \
		|| { rm -f vmlinux/$(ARCH)/vmlinux.h.tmp; exit 1; }
	mv vmlinux/$(ARCH)/vmlinux.h.tmp vmlinux/$(ARCH)/vmlinux.h

clean:
	$(CARGO) clean
