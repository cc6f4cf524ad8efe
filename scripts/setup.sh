#!/usr/bin/env bash
# Installs what attnc needs to build and test on Debian 12 (as root), only if missing.
set -euo pipefail
# zlib, zstd and libedit: LLVMConfig.cmake looks for them (llvm-19-dev does not depend on them)
pkgs=(cmake make gcc g++ flex bison llvm-19-dev llvm-19-tools clang-19 libclang-rt-19-dev
      zlib1g-dev libzstd-dev libedit-dev
      python3-numpy libopenblas-dev valgrind pkg-config python3-venv python3-pip python3-setuptools
      python3-torch libopenmpi-dev openmpi-bin
      qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
