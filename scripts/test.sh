#!/usr/bin/env bash
# Installs what the build and tests need, then checks formatting, lints and runs every test.
#
#   scripts/test.sh
#
# Safe to rerun: installs are skipped when present, and the build is cached in
# $CARGO_TARGET_DIR (default ~/.cache/callpipe/target).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CALLPIPE_ROOT"

ensure_build_deps
ensure_test_servers

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --locked -- -D warnings
echo "== model install (cached in \$CALLPIPE_MODEL_DIR or ~/.cache/callpipe/models)"
cargo build --release --locked
"$CALLPIPE_BIN" model install
echo "== cargo test"
cargo test --release --workspace --locked
scripts/terraform_check.sh
