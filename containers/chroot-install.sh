#!/bin/bash
# mmdebstrap's customize hook for build-ci.sh: run install.sh in the new root file system
# ROOTFS (a real chroot, as root), with the host's CA bundle and pip settings bound in
# read-only for the duration: they serve the build, they are not part of the image.
#   chroot-install.sh ROOTFS SRC
set -euo pipefail
rootfs=$1
src=$2

mounted=()
cleanup() {
  local status=$?
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    # a bind left in place would be squashed into the image, or deleted through later
    umount "${mounted[i]}" || { echo "chroot-install.sh: cannot unmount ${mounted[i]}" >&2; status=1; }
  done
  rmdir "$rootfs/etc/ssl/host-certs" 2>/dev/null || true
  for d in /etc/xdg/pip /opt/wheels /opt/pypi /opt/pypi-more; do
    rmdir "$rootfs$d" 2>/dev/null || true
  done
  exit "$status"
}
trap cleanup EXIT
bind_ro() {  # bind_ro HOST_DIR GUEST_DIR
  mkdir -p "$rootfs$2"
  mount --bind "$1" "$rootfs$2"
  mounted+=("$rootfs$2")
  mount -o remount,ro,bind "$rootfs$2"
}

# the source, as in the Apptainer %files (a clean copy: no venv, no runs, no caches)
mkdir -p "$rootfs/opt/hpcopt/src"
tar -C "$src" --exclude=.git --exclude=.venv --exclude=runs --exclude=__pycache__ \
  --exclude=.pytest_cache --exclude=.ruff_cache -cf - . | tar -C "$rootfs/opt/hpcopt/src" -xf -

bind_ro /etc/ssl/certs /etc/ssl/host-certs
for d in /etc/xdg/pip /opt/wheels /opt/pypi /opt/pypi-more; do
  if [ -d "$d" ]; then bind_ro "$d" "$d"; fi
done
# every variable that may name a CA bundle points at the host's, bound in above
bundle=/etc/ssl/host-certs/ca-certificates.crt
chroot "$rootfs" /usr/bin/env PIP_CERT=$bundle SSL_CERT_FILE=$bundle \
  REQUESTS_CA_BUNDLE=$bundle CURL_CA_BUNDLE=$bundle SSL_CERT_DIR=/etc/ssl/host-certs \
  ${HPCOPT_TORCH:+HPCOPT_TORCH="$HPCOPT_TORCH"} /bin/bash /opt/hpcopt/src/containers/install.sh
