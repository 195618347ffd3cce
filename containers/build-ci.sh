#!/bin/bash
# Build the hpcopt image without Apptainer, from Debian's archive, with the same
# containers/install.sh as containers/hpcopt.def: mmdebstrap makes a Debian bookworm root
# file system and runs install.sh in it (containers/chroot-install.sh), mksquashfs packs
# it. Charliecloud's ch-run runs the result. Prints the build time and the image's size.
#
#   containers/build-ci.sh [OUT]      -> OUT/rootfs (a directory image for ch-run) and
#                                        OUT/hpcopt.sqfs (default OUT: /var/tmp/hpcopt-image)
#
# The host's CA bundle and pip settings (a local wheel folder, an index on disk) are bound
# in for the build only: nothing of the build machine is baked into the image.
# Needs root, and Debian's mmdebstrap and squashfs-tools. The image gets PyTorch's CPU
# build (torch==2.13.0, on this machine's disk) unless HPCOPT_TORCH says otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
out=$(realpath -m "${1:-/var/tmp/hpcopt-image}")
rootfs=$out/rootfs
start=$(date +%s)
export HPCOPT_TORCH=${HPCOPT_TORCH:-torch==2.13.0}

if findmnt -R "$rootfs" >/dev/null 2>&1; then  # never delete through a bind mount
  echo "build-ci.sh: something is still mounted at or under $rootfs; unmount it first" >&2
  exit 1
fi
rm -rf --one-file-system "$rootfs" "$out/hpcopt.sqfs"
mkdir -p "$out"
# install.sh runs in a real chroot (apt inside Charliecloud's user namespace cannot chown)
mmdebstrap --quiet --variant=minbase --include=ca-certificates \
  --customize-hook="\"$here/chroot-install.sh\" \"\$1\" \"$src\"" bookworm "$rootfs"
built=$(date +%s)

mksquashfs "$rootfs" "$out/hpcopt.sqfs" -noappend -quiet -no-progress -comp zstd \
  -wildcards -e 'proc/*' 'sys/*' 'dev/*' >/dev/null
end=$(date +%s)
echo "build-ci.sh: image built in $((built - start)) s, squashed in $((end - built)) s"
echo "build-ci.sh: $(du -sh "$rootfs" | cut -f1) as a folder ($rootfs)," \
  "$(du -h "$out/hpcopt.sqfs" | cut -f1) as squashfs ($out/hpcopt.sqfs)"
