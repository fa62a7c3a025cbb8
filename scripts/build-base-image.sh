#!/usr/bin/env bash
# Build the images' Python base locally, without a registry: a minimal Debian root holding Debian's
# Python 3.11 (mmdebstrap), imported into podman as ${BASE_IMAGE}. scripts/build-images.sh passes it to
# deploy/Dockerfile as PYTHON_IMAGE.
#
#   scripts/build-base-image.sh          # builds only if ${BASE_IMAGE} is missing
#   FORCE=1 scripts/build-base-image.sh  # rebuild
#
# Reproducible: SOURCE_DATE_EPOCH (default: the last commit's time) fixes every timestamp in the root,
# so the same Debian package versions give the same tarball. No apt, no docs, no compilers: the
# `essential` variant plus only what the runtime needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/podman-env.sh

BASE_IMAGE="${BASE_IMAGE:-localhost/lhcie-python:3.11-bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

if [ -z "${FORCE:-}" ] && podman image exists "${BASE_IMAGE}"; then
  echo "base image ${BASE_IMAGE} exists (FORCE=1 rebuilds it)"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# python3.11-venv: `python -m venv` in the build stage (pip's wheel comes with it; the runtime venv
# drops pip again). passwd: useradd for the unprivileged user. ca-certificates: TLS to RabbitMQ,
# MongoDB and S3. netbase: /etc/services and /etc/protocols for the socket module.
echo "building ${BASE_IMAGE} from Debian ${SUITE}"
# usr-is-merged with the merged-usr hook instead of the usrmerge package, which would pull in all of perl.
mmdebstrap --quiet --variant=essential --mode=root \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=usr-is-merged,python3.11,python3.11-venv,python-is-python3,passwd,ca-certificates,netbase \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook='rm -rf "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
  "${SUITE}" "${work}/root.tar" "${MIRROR}"

podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "Debian ${SUITE} with python3.11 (mmdebstrap, SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH})" \
  "${work}/root.tar" "${BASE_IMAGE}" >/dev/null
echo "base image ${BASE_IMAGE}: $(podman image inspect --format '{{.Size}}' "${BASE_IMAGE}") bytes"
