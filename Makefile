# Cocoon: `make demo` sets everything up and boots a micro-VM; `make test`
# runs every test; `make bench` runs the benchmarks. VM tests and benchmarks
# run through tests/machine/run (directly on hosts with VMX/SVM, otherwise in
# the L1 test machine).
SHELL := /bin/bash
CARGO ?= cargo
BUILD := build
TRIPLE := x86_64-unknown-linux-gnu
# Honours CARGO_TARGET_DIR (several worktrees can build side by side).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
AGENT := $(TARGET_DIR)/$(TRIPLE)/release/cocoon-agent
VMM := $(TARGET_DIR)/release/cocoon-vmm
MACHINE := tests/machine/run --
PREFIX ?= /usr/local

.PHONY: all deps kernel agent initramfs test-initramfs vmm api build demo demo-vm test lint unit-test vm-test api-fuzz bench install clean

all: build

deps:
	@bash scripts/deps.sh

kernel: deps
	@mkdir -p $(BUILD)
	ln -sfn "$$(guest-kernel/build.sh)" $(BUILD)/vmlinux

agent:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --locked --target $(TRIPLE) -p cocoon-agent

initramfs: agent
	scripts/mkinitramfs.sh $(AGENT) $(BUILD)/initramfs.img

# The device tests' guest program as /init of its own initramfs (test only).
test-initramfs:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --locked --target $(TRIPLE) -p cocoon-guest-test
	scripts/mkinitramfs.sh $(TARGET_DIR)/$(TRIPLE)/release/cocoon-guest-test $(BUILD)/test-initramfs.img

vmm:
	$(CARGO) build --release --locked -p cocoon-vmm

# cocoond and the cocoon CLI.
api:
	$(CARGO) build --release --locked -p cocoon-api

build: deps kernel initramfs vmm api

# A real sandbox: cocoond, the busybox image, `cocoon run --rm`.
demo: build
	$(MACHINE) bash scripts/demo.sh $(TARGET_DIR) $(BUILD)

# The bare VMM booting the guest kernel to the agent, with boot statistics.
demo-vm: build
	$(MACHINE) $(VMM) --kernel $(BUILD)/vmlinux --initrd $(BUILD)/initramfs.img \
		--vcpus 2 --memory-mib 256 --console --stats --cmdline "quiet cocoon.mode=summary"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Unit tests and the tiny-guest VMM tests run on this host (/dev/kvm must
# exist; kvm_pvm is enough for hand-written guests).
unit-test:
	$(CARGO) test --locked --workspace --exclude cocoon-tests

# Integration tests that boot real Linux guests.
vm-test: build test-initramfs
	COCOON_VMM="$(abspath $(VMM))" \
	COCOOND="$(abspath $(TARGET_DIR)/release/cocoond)" \
	COCOON_CLI="$(abspath $(TARGET_DIR)/release/cocoon)" \
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(CURDIR)/tests/machine/run --" \
	COCOON_MACHINE_TIMEOUT="$${COCOON_MACHINE_TIMEOUT:-3600}" \
		$(CARGO) test --locked --release -p cocoon-tests --test vm -- --test-threads=1

# schemathesis (pinned, from PyPI) against a real cocoond serving real
# sandboxes and the OpenAPI document it serves (tests/api/schemathesis.sh).
# Not part of `make test` yet: its run on the merged API (streaming and
# network routes) still reports a failure (see docs/api.md, Tests).
api-fuzz: build
	bash tests/api/schemathesis.sh $(TARGET_DIR) $(BUILD)

test: lint unit-test vm-test api-fuzz

bench: build test-initramfs
	$(MACHINE) python3 bench/boot.py --vmm $(VMM) --kernel $(BUILD)/vmlinux --initrd $(BUILD)/initramfs.img
	$(MACHINE) python3 bench/net.py --vmm $(VMM) --kernel $(BUILD)/vmlinux --initrd $(BUILD)/test-initramfs.img
	$(MACHINE) python3 bench/blk.py --vmm $(VMM) --kernel $(BUILD)/vmlinux --initrd $(BUILD)/test-initramfs.img
	$(MACHINE) python3 bench/vsock.py --vmm $(VMM) --kernel $(BUILD)/vmlinux --initrd $(BUILD)/test-initramfs.img
	bash bench/images.sh
	$(CARGO) build --release --locked -p cocoon-tests --example exec_bench
	COCOON_VMM="$(abspath $(VMM))" bash bench/exec.sh "$(abspath $(TARGET_DIR))/release/examples/exec_bench"
	COCOON_MACHINE_MEM_MIB=8192 $(MACHINE) python3 bench/run.py --bin "$(abspath $(TARGET_DIR))/release" --kernel $(BUILD)/vmlinux --initrd $(BUILD)/initramfs.img

install: build
	install -D -m 0755 $(VMM) $(PREFIX)/bin/cocoon-vmm
	install -D -m 0755 $(TARGET_DIR)/release/cocoond $(PREFIX)/bin/cocoond
	install -D -m 0755 $(TARGET_DIR)/release/cocoon $(PREFIX)/bin/cocoon
	install -D -m 0644 $(BUILD)/vmlinux $(PREFIX)/share/cocoon/vmlinux
	install -D -m 0644 $(BUILD)/initramfs.img $(PREFIX)/share/cocoon/initramfs.img

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
