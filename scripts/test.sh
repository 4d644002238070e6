#!/usr/bin/env bash
# The project's test command (README "Test"; `.ci/run` calls exactly this):
# formatting, lints and docs with warnings denied, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '== %s\n' "$*" >&2; }

step cargo fmt --check
cargo fmt --all --check
step cargo clippy
cargo clippy --workspace --all-targets --locked -- -D warnings
step cargo doc
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --document-private-items --locked
step cargo test
cargo test --workspace --locked
