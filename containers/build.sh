#!/bin/bash
# Build containers/hpcopt.def into hpcopt-VERSION.sif where Apptainer is installed:
#   containers/build.sh [OUT.sif] [extra apptainer build flags, e.g. --fakeroot]
# Prints the build time and the image's size. Without Apptainer (as in CI), see
# containers/build-ci.sh, which builds the same contents with Charliecloud.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$(dirname "$here")"
command -v apptainer >/dev/null || {
  echo "build.sh: apptainer is not installed here; containers/build-ci.sh builds an" \
    "equivalent image with Debian's mmdebstrap and charliecloud" >&2
  exit 2
}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' hpcopt/__init__.py)
out=$(realpath -m "${1:-hpcopt-$version.sif}")
shift || true
start=$(date +%s)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/src"
tar --exclude=.git --exclude=.venv --exclude=runs --exclude=__pycache__ \
  --exclude=.pytest_cache --exclude=.ruff_cache --exclude='*.sif' -cf - . | tar -C "$stage/src" -xf -
cp containers/hpcopt.def "$stage/"
(cd "$stage" && apptainer build --build-arg "VERSION=$version" "$@" "$out" hpcopt.def)
echo "build.sh: $out built in $(($(date +%s) - start)) s, $(du -h "$out" | cut -f1)"
