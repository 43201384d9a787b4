#!/usr/bin/env bash
# Runs vfio-core's pure decoders under Miri (undefined behaviour, out-of-bounds and
# uninitialised reads): the unit tests of pci, rom, info and iova, and the decoder tests
# over real config-space images and option ROMs. The mock kernel is left out: it works
# through memfds, mmap and eventfds, which Miri cannot run.
# Skips with a message when the nightly toolchain or its miri component is missing (it is
# added with rustup when possible).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "miri: skipped: no nightly toolchain"
    exit 0
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    timeout 300 rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri: skipped: the miri component could not be installed"
    exit 0
fi
export CARGO_TARGET_DIR=target/miri
export MIRIFLAGS="-Zmiri-disable-isolation"
cargo +nightly miri setup >/dev/null
cargo +nightly miri test -p vfio-core --lib -- pci:: rom:: info:: iova::
cargo +nightly miri test -p vfio-core --test rom_parse --test config_decode
