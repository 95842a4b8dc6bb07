#!/usr/bin/env bash
# Build the llama.cpp tools the benchmarks and fixture generators compare against
# (llama-quantize, llama-imatrix, llama-export-lora), CPU only, from the llama.cpp that the
# PyPI source package `llama-cpp-python` vendors. Nothing of llama.cpp enters this repository:
# everything lives in a cache directory outside it.
#
#   benches/llama_cpp_tools.sh [CACHE_DIR]      (default: $LLAMA_CPP_CACHE or /work/cache/llama-cpp)
#
# Afterwards:
#   CACHE_DIR/bin/llama-{quantize,imatrix,export-lora}   the tools (static, self-contained)
#   CACHE_DIR/src                                        llama.cpp source: convert_*.py, gguf-py
#   CACHE_DIR/venv                                       the Python used to download the package
#
# Re-running is cheap: each step is skipped when its output exists. Needs cmake, a C/C++ compiler
# and python3 (with venv); the only network access is PyPI through pip.
#
# Exactness note: GGML_NATIVE only applies -march=native to the ggml-cpu backend. ggml-quants.c
# (the quantizers llama-quantize calls) is part of ggml-base and is compiled for the baseline
# x86-64 target, so the compiler cannot contract its multiply-adds into FMAs; its bytes are the
# plain IEEE evaluation that loratool reproduces.
set -euo pipefail

VERSION=0.3.36
CACHE="${1:-${LLAMA_CPP_CACHE:-/work/cache/llama-cpp}}"
JOBS="${JOBS:-$(nproc)}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
SDIST="$CACHE/llama_cpp_python-$VERSION.tar.gz"
SRC="$CACHE/src"
BUILD="$CACHE/build"
BIN="$CACHE/bin"
TARGETS=(llama-quantize llama-imatrix llama-export-lora)

if [ ! -f "$SDIST" ]; then
    # The package's build backend is scikit-build-core; with build isolation pip would build
    # cmake and ninja from source just to read the metadata, so install the backend once (a
    # wheel) and download without isolation.
    if [ ! -x "$CACHE/venv/bin/pip" ]; then
        python3 -m venv "$CACHE/venv"
        "$CACHE/venv/bin/pip" install --quiet 'scikit-build-core==1.1.2'
    fi
    tmp="$(mktemp -d "$CACHE/download.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    "$CACHE/venv/bin/pip" download --quiet --no-binary :all: --no-deps --no-build-isolation \
        "llama-cpp-python==$VERSION" -d "$tmp"
    mv "$tmp/llama_cpp_python-$VERSION.tar.gz" "$SDIST"
fi

if [ ! -f "$SRC/CMakeLists.txt" ]; then
    tmp="$(mktemp -d "$CACHE/unpack.XXXXXX")"
    tar -xzf "$SDIST" -C "$tmp"
    rm -rf "$SRC"
    mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$SRC"
    rm -rf "$tmp"
fi

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$SRC" -B "$BUILD" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=ON \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_TOOLS=ON >/dev/null
fi
cmake --build "$BUILD" --parallel "$JOBS" --target "${TARGETS[@]}" >/dev/null

mkdir -p "$BIN"
for t in "${TARGETS[@]}"; do
    cp -f "$BUILD/bin/$t" "$BIN/$t.tmp"
    mv -f "$BIN/$t.tmp" "$BIN/$t"
    echo "$BIN/$t"
done
echo "$SRC/gguf-py"
echo "$SRC/convert_hf_to_gguf.py"
