#!/usr/bin/env bash
# Packages vfio-core as crates.io would receive it, then builds and tests the packaged
# crate on its own (outside the workspace): the default features alone, the simulated
# host's tests (--features mock), and rustdoc with -D warnings in every feature set.
# Usage: tests/package-check.sh (from anywhere; uses target/package-check).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
target="$top/target/package-check"
cargo package -p vfio-core --allow-dirty --no-verify --quiet
version=$(cargo pkgid -p vfio-core | sed 's/.*[#@]//')
crate="$top/target/package/vfio-core-$version.crate"
# A fixed place: the test binaries embed the crate's path (CARGO_MANIFEST_DIR), so a
# new temporary directory each time would leave the shared target dir with binaries that
# look for their data in a directory that is gone.
# (outside the repository, so cargo does not take it for a workspace member)
work="${TMPDIR:-/tmp}/vfio-core-package-check-$(printf %s "$top" | cksum | cut -d' ' -f1)"
rm -rf "$work"
mkdir -p "$work"
tar xzf "$crate" -C "$work"
cd "$work/vfio-core-$version"
find . -type f -exec touch {} +
# The workspace's lock file keeps the versions the workspace tested.
cp "$top/Cargo.lock" .
echo "packaged: $(tar tzf "$crate" | wc -l) files; license files: $(ls LICENSE-* | tr '\n' ' ')"
export CARGO_TARGET_DIR="$target"
cargo build --quiet
echo "default features: normal dependencies: $(cargo tree -e normal --prefix none | sort -u | grep -cv '^vfio-core') crates"
if cargo tree -e normal --prefix none | grep -Eq '^(regex|serde|serde_json) '; then
    echo "package-check: the default features pull in regex or serde" >&2
    exit 1
fi
cargo test --quiet --all-features
for f in "" "--features serde" "--features host" "--features kvm" "--features mock"; do
    RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps $f
done
echo "package-check: ok"
