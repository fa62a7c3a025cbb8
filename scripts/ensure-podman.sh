#!/usr/bin/env bash
# Make sure podman can build and run the images here: install Debian's podman, buildah, runc and
# mmdebstrap if missing, and print the environment the other scripts export (CONTAINERS_CONF).
# Used by `make images`, `make test-images` and CI (a fresh machine).
#
# Why these settings: a sandbox or CI runner without overlayfs-in-userns, systemd or full cgroup
# delegation. `vfs` storage works on any filesystem, `runc` copes with the cgroups and rlimits there
# (crun does not), `cgroupfs` needs no systemd, and an empty default_ulimits keeps podman from asking
# for rlimits the runner refuses. deploy/podman/containers.conf holds them.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for cmd in podman buildah runc mmdebstrap /usr/bin/catatonit; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # Without recommends (fuse-overlayfs, slirp4netns...): vfs storage and host networking need none.
  # catatonit: the init of the pods' infra container (podman kube play).
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    podman buildah runc mmdebstrap catatonit uidmap ca-certificates >/dev/null
fi
