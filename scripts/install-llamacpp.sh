#!/bin/sh
# llama-cpp-python (requirements-llamacpp.txt's pin) and llama.cpp's GGUF converter, for the llamacpp engine.
#
#   scripts/install-llamacpp.sh install PYTHON   build (or reuse) the wheel, install it and the converter
#                                                into PYTHON's environment (make llamacpp: .venv/bin/python)
#   scripts/install-llamacpp.sh build OUT        only build: OUT/<wheel> and OUT/llama.cpp (images/Dockerfile)
#
# llama-cpp-python is published as an sdist only; its build compiles llama.cpp with CMake and a C++
# compiler (cmake, g++). The build is a plain CPU one, portable across x86-64 CPUs with AVX2: no BLAS,
# no -march=native (GGML_NATIVE=OFF), AVX/AVX2/FMA/F16C on, AVX-512 off, OpenMP threads, no llava/mtmd.
# LLAMACPP_CMAKE_ARGS replaces those flags. A wheel of the pinned version already in $LLAMACPP_WHEELS
# (default ~/.cache/wattserve/wheels; built wheels are kept there) is used instead of building.
# The converter (convert_hf_to_gguf.py, its conversion/ package and the gguf-py it is written against)
# is not in the wheel: it is copied from the same sdist into <prefix>/share/wattserve/llama.cpp.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
mode="${1:-}"; target="${2:-}"
[ "$mode" = install ] || [ "$mode" = build ] && [ -n "$target" ] || { sed -n '2,15p' "$0" >&2; exit 2; }
req="$root/requirements-llamacpp.txt"
[ -f "$req" ] || req=/tmp/llamacpp/requirements-llamacpp.txt
version="$(sed -n 's/^llama-cpp-python==\([^ #]*\).*/\1/p' "$req")"
[ -n "$version" ] || { echo "no llama-cpp-python pin in $req" >&2; exit 2; }
py="${PYTHON:-python3}"; [ "$mode" = install ] && py="$target"
"$py" -m pip --version >/dev/null 2>&1 || { echo "$py has no pip" >&2; exit 2; }
wheels="${LLAMACPP_WHEELS:-$HOME/.cache/wattserve/wheels}"
: "${LLAMACPP_CMAKE_ARGS:=-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAVA_BUILD=OFF}"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
log() { echo "[install-llamacpp] $*" >&2; }

log "llama-cpp-python $version: fetching its sdist (the converter comes from it)"
"$py" -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$work"
sdist="$(ls "$work"/llama_cpp_python-"$version".tar.gz)"
wheel="$(ls "$wheels"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)"
if [ -n "$wheel" ]; then
  log "using the wheel $wheel"
else
  command -v cmake >/dev/null && { command -v g++ >/dev/null || command -v c++ >/dev/null; } \
    || { log "building llama.cpp needs cmake and a C++ compiler (Debian/Ubuntu: apt-get install cmake g++)"; exit 1; }
  log "building the wheel (CMAKE_ARGS: $LLAMACPP_CMAKE_ARGS); minutes"
  t0="$(date +%s)"
  mkdir -p "$wheels"
  CMAKE_ARGS="$LLAMACPP_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    nice -n 10 "$py" -m pip wheel --quiet --no-deps "$sdist" -w "$work/wheel"
  cp "$work"/wheel/llama_cpp_python-"$version"-*.whl "$wheels"/ 2>/dev/null || true
  wheel="$(ls "$work"/wheel/llama_cpp_python-"$version"-*.whl)"
  log "built in $(( $(date +%s) - t0 )) s: $wheel"
fi
tar -xzf "$sdist" -C "$work"
tree="$work/llama_cpp_python-$version/vendor/llama.cpp"
conv="$work/llama.cpp"; mkdir -p "$conv"
cp -r "$tree/convert_hf_to_gguf.py" "$tree/conversion" "$tree/gguf-py" "$tree/LICENSE" "$conv"/
echo "$version" > "$conv/VERSION"

if [ "$mode" = build ]; then
  mkdir -p "$target"; cp "$wheel" "$target"/; rm -rf "$target/llama.cpp"; cp -r "$conv" "$target/llama.cpp"
  log "wheel and converter in $target"; exit 0
fi
"$py" -m pip install --quiet --no-deps "$wheel"
"$py" -m pip install --quiet -r "$req" -c "$root/constraints.txt" --no-deps
prefix="$("$py" -c 'import sys; print(sys.prefix)')"
rm -rf "$prefix/share/wattserve/llama.cpp"; mkdir -p "$prefix/share/wattserve"
cp -r "$conv" "$prefix/share/wattserve/llama.cpp"
"$py" -c "import llama_cpp; print('[install-llamacpp] llama-cpp-python', llama_cpp.__version__, 'loads:', llama_cpp.llama_print_system_info().decode().strip())"
log "converter in $prefix/share/wattserve/llama.cpp"
