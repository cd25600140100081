#!/bin/sh
# The one layer compile-cpu / compile-cuda add to the shared image: torch.compile's inductor writes C++
# and compiles it at warm-up, so it needs a C++ compiler and Python's headers
# (services/inference/engines/compile_engine.py TOOLCHAIN_PACKAGES names the same two packages).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends g++ python3-dev >/dev/null
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
