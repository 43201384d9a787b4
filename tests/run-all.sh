#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, unit and integration tests, and a
# bounded fuzzing run (fuzz/run.sh; skipped with a message without the nightly toolchain).
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

step "fuzz/run.sh 5 (every fuzz target, 5 s each)"
fuzz/run.sh 5
