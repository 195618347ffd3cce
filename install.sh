#!/usr/bin/env bash
# Install hpcopt for development into .venv, with what it needs from Debian:
#   libllvm19        Sionna RT on the CPU (Dr.Jit's LLVM backend; LLVM 15 crashes it)
#   slurm-wlm munge  the tests that run a real Slurm cluster on this machine
# Debian packages are installed when we are root (or with sudo when it is there); else
# the script says what to install and goes on.
set -euo pipefail
cd "$(dirname "$0")"

need=()
[ -e /usr/lib/x86_64-linux-gnu/libLLVM.so.19.1 ] || need+=(libllvm19)
PATH="$PATH:/usr/sbin:/sbin" command -v slurmctld >/dev/null || need+=(slurm-wlm)
PATH="$PATH:/usr/sbin:/sbin" command -v munged >/dev/null || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else sudo="-"; fi
  if [ "$sudo" = "-" ]; then
    echo "install.sh: please install these Debian packages: ${need[*]}" >&2
  else
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
  fi
fi

python3 -m venv .venv
# torch first, pinned: its CPU build lies on disk here; a plain range with no torch
# installed would pull a multi-GB CUDA build.
.venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -e '.[dev]'
echo "install.sh: hpcopt installed in .venv"
