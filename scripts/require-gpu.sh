#!/usr/bin/env bash
# Exit 2, with what to do, unless this machine has a usable NVIDIA GPU (nvidia-smi lists one).
# Called by `make … CONFIG=<x>-cuda` before anything is installed.
set -u
config="${1:-a CUDA configuration}"
smi="${NVIDIA_SMI:-nvidia-smi}"
if ! command -v "$smi" >/dev/null 2>&1; then
  echo "error: CONFIG=$config needs an NVIDIA GPU, and this machine has no nvidia-smi (no NVIDIA driver);" \
       "run a -cpu configuration (CONFIG=cpu) or use a machine with an NVIDIA GPU and driver >= 580" \
       "(CUDA 13 wheels; the CUDA 12 route: README, 'CUDA')" >&2
  exit 2
fi
if ! out="$("$smi" -L 2>&1)" || ! grep -q '^GPU ' <<<"$out"; then
  echo "error: CONFIG=$config needs an NVIDIA GPU, and nvidia-smi lists none: ${out:-no output}" >&2
  exit 2
fi
