#!/bin/bash
# Everything that goes into the hpcopt image, for every way of building it:
# containers/hpcopt.def (Apptainer, in %post) and containers/build-ci.sh (a Debian root
# file system run by Charliecloud). Runs as root inside the image being built, on Debian
# bookworm, with the hpcopt source at $HPCOPT_SRC.
#
#   HPCOPT_SRC    the hpcopt source tree to install      (default /opt/hpcopt/src)
#   HPCOPT_TORCH  the torch requirement                  (default "torch>=2.4,<3": PyPI's
#                 CUDA build, which carries the CUDA runtime; the driver comes from the
#                 host through apptainer --nv. CI passes torch==2.13.0, a CPU build.)
set -euo pipefail
src=${HPCOPT_SRC:-/opt/hpcopt/src}
torch=${HPCOPT_TORCH:-"torch>=2.4,<3"}
export DEBIAN_FRONTEND=noninteractive

# apt's sandbox user cannot switch users inside a user namespace (Charliecloud)
apt=(apt-get -o APT::Sandbox::User=root -qq)
"${apt[@]}" update
# slurm-client: jobs find node addresses and requeue themselves with scontrol; the site's
# /etc/slurm and munge socket are bound in at run time (mount points made below)
"${apt[@]}" install -y --no-install-recommends \
  python3 python3-venv python3-dev gcc libllvm19 ca-certificates procps slurm-client
"${apt[@]}" clean
rm -rf /var/lib/apt/lists/*

mkdir -p /etc/slurm /run/munge

python3 -m venv /opt/hpcopt/venv
pip=(/opt/hpcopt/venv/bin/pip install --no-cache-dir --disable-pip-version-check)
"${pip[@]}" "$torch"
"${pip[@]}" "$src[ray,slurm,coverage,cmaes,dev]"

install -D -m 0644 "$src/containers/environment" /opt/hpcopt/environment
# ch-run --set-env reads /ch/environment: plain VAR=value lines, no comments
mkdir -p /ch
grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$src/containers/environment" > /ch/environment

# what the image is for: fail the build, not the first job, when a part is missing
set -a
# shellcheck disable=SC1091
. /opt/hpcopt/environment
set +a
python -c "import hpcopt, h5py, ray, submitit, torch, cmaes, matplotlib, sionna.rt; print('hpcopt', hpcopt.__version__)"
