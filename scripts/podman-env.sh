# Sourced by the image scripts: point podman and buildah at the project's settings (deploy/podman/).
# shellcheck shell=bash
_lhcie_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-${_lhcie_root}/deploy/podman/containers.conf}"
export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-${_lhcie_root}/deploy/podman/storage.conf}"
unset _lhcie_root
