#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, unit and integration tests.
# Installs what it needs by package name on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace"
cargo test --workspace

# The nested VM lab: boots the stock and the custom kernel (built on first use and cached in
# $VFIO_LAB_CACHE, default ~/.cache/vfio-lab) under QEMU/TCG with virtio-iommu and runs the
# in-VM suite. It installs its own packages (QEMU, busybox, kernel build tools) with apt-get.
# Cold (kernel build included) about 5-11 min on 2 cores, warm about 12 s. SKIP_VM=1 skips it.
step "vfio-lab suite (nested VM, stock and custom kernels)"
if [ "${SKIP_VM:-0}" = 1 ]; then
    echo "skipped: SKIP_VM=1"
else
    cargo run -p vfio-lab --release -- suite
fi
