#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, unit and integration tests, and a
# bounded fuzzing run (fuzz/run.sh; skipped with a message without the nightly toolchain).
# Installs what it needs by package name on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Packages some tests compare against: lspci (pciutils) for `info`, the real option ROMs of
# ipxe-qemu and seabios for `rom`. Without them those tests skip with a reason.
step "prerequisites"
need=()
command -v lspci >/dev/null 2>&1 || need+=(pciutils)
[ -d /usr/lib/ipxe/qemu ] || need+=(ipxe-qemu)
[ -d /usr/share/seabios ] || need+=(seabios)
if [ ${#need[@]} -eq 0 ]; then
    echo "all present"
elif [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
else
    echo "not root: ${need[*]} not installed; the tests that need them will skip"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace"
cargo test --workspace

step "cargo doc, warnings as errors (broken intra-doc links)"
for features in "" host kvm mock serde host,kvm,mock,serde; do
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -q -p vfio-core ${features:+--features $features}
done
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p vfiotool

step "vfio-core alone, default features (what a VMM embeds)"
cargo test -p vfio-core

step "vfio-core as packaged for crates.io: built and tested on its own (tests/package-check.sh)"
bash tests/package-check.sh

step "Miri over the pure decoders (tests/miri.sh)"
bash tests/miri.sh

step "fuzz/run.sh 5 (every fuzz target, 5 s each)"
fuzz/run.sh 5

# The nested VM lab: the matrix of docs/lab.md (Debian's 6.12 and newest stock kernels, the
# custom 6.12 and newest builds, under QEMU 7.2 and 10, with and without an IOMMU), kernels
# fetched or built on first use and cached in $VFIO_LAB_CACHE (default ~/.cache/vfio-lab).
# It installs its own packages with apt-get and fetches other suites' packages into the
# cache only. Timings: docs/lab.md. SKIP_VM=1 skips it.
step "vfio-lab suite (nested VM: every kernel, QEMU and VFIO mode)"
if [ "${SKIP_VM:-0}" = 1 ]; then
    echo "skipped: SKIP_VM=1"
else
    cargo run -p vfio-lab --release -- suite
fi
