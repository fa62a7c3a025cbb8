#!/usr/bin/env bash
# Build the LHCIE images from deploy/Dockerfile: one per service of the chart, plus the cli.
#
#   scripts/build-images.sh                          # localhost/lhcie/lhcie-<target>:<version>
#   scripts/build-images.sh --list                   # print the image references and build nothing
#   scripts/build-images.sh intake cli               # only these targets
#   REGISTRY=registry.example.org PUSH=1 scripts/build-images.sh
#   TAG=0.1.0-rc.1 scripts/build-images.sh           # another tag (the chart's image.tag)
#   BUILD_ARGS=--no-cache scripts/build-images.sh    # extra arguments for the engine's build
#
# Names: <REGISTRY>/<REPOSITORY>-<target>:<TAG>, exactly what the chart renders from image.registry,
# image.repository and image.tag (REPOSITORY defaults to the chart's image.repository, TAG to the
# project version, which is the chart's appVersion). The service list is the chart's: the
# `lhcie.services` line of helm/lhcie/templates/_helpers.tpl; a new service is one word there (and its
# Dockerfile stage).
#
# Engine: podman (Debian's, installed by scripts/ensure-podman.sh; the base image is built locally by
# scripts/build-base-image.sh, so no registry is needed) or, with ENGINE=docker, a Docker engine with
# BuildKit (base image from Docker Hub unless PYTHON_IMAGE says otherwise).
#
# Reproducible with podman: the image timestamps and the created label are the commit time
# (SOURCE_DATE_EPOCH), so the same commit and base give the same image.
set -euo pipefail
cd "$(dirname "$0")/.."

services="$(sed -n '/define "lhcie.services"/{n;p;q}' helm/lhcie/templates/_helpers.tpl)"
[ -n "${services}" ] || { echo "no service list in helm/lhcie/templates/_helpers.tpl" >&2; exit 1; }
read -r -a ALL_TARGETS <<<"${services} cli"

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)"
chart_repository="$(sed -n '/^image:/,/^[^ #]/s/^  repository: *//p' helm/lhcie/values.yaml)"
REGISTRY="${REGISTRY-localhost}"
REPOSITORY="${REPOSITORY:-${chart_repository}}"
TAG="${TAG:-${VERSION}}"
PREFIX="${REGISTRY:+${REGISTRY%/}/}${REPOSITORY}"

list=0
targets=()
for arg in "$@"; do
  case "${arg}" in
    --list) list=1 ;;
    -*) echo "unknown option ${arg}" >&2; exit 2 ;;
    *) targets+=("${arg}") ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for target in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" ${target} "* ]] || { echo "unknown target ${target} (${ALL_TARGETS[*]})" >&2; exit 2; }
done

if [ "${list}" = 1 ]; then
  for target in "${targets[@]}"; do echo "${PREFIX}-${target}:${TAG}"; done
  exit 0
fi

ENGINE="${ENGINE:-podman}"
REVISION="${REVISION:-$(git rev-parse --verify --quiet HEAD || echo unknown)}"
SOURCE_URL="${SOURCE_URL:-$(git remote get-url origin 2>/dev/null || echo unknown)}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
CREATED="$(date -u -d "@${SOURCE_DATE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ)"

engine_args=()
if [ "${ENGINE}" = podman ]; then
  scripts/ensure-podman.sh
  source scripts/podman-env.sh
  if [ -z "${PYTHON_IMAGE:-}" ]; then
    PYTHON_IMAGE="localhost/lhcie-python:3.11-bookworm"
    BASE_IMAGE="${PYTHON_IMAGE}" scripts/build-base-image.sh
  fi
  # Host network: the build reaches PyPI the way the host does (no bridge networking needed).
  # docker format: OCI images have no HEALTHCHECK.
  engine_args+=(--network host --timestamp "${SOURCE_DATE_EPOCH}" --layers --format docker
    --ignorefile deploy/Dockerfile.dockerignore)
fi
# The host's CA bundle, for pip behind a TLS-intercepting proxy (a build secret: never in a layer).
ca_bundle="${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "${ca_bundle}" ] && engine_args+=(--secret "id=ca,src=${ca_bundle}")
[ -n "${PYTHON_IMAGE:-}" ] && engine_args+=(--build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}")
# Anything else for the engine, e.g. BUILD_ARGS=--no-cache.
read -r -a extra_args <<<"${BUILD_ARGS:-}"
engine_args+=("${extra_args[@]}")

for target in "${targets[@]}"; do
  image="${PREFIX}-${target}:${TAG}"
  echo "building ${image}"
  "${ENGINE}" build --file deploy/Dockerfile --target "${target}" --tag "${image}" "${engine_args[@]}" \
    --build-arg VERSION="${VERSION}" --build-arg REVISION="${REVISION}" \
    --build-arg CREATED="${CREATED}" --build-arg SOURCE_URL="${SOURCE_URL}" \
    --build-arg SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH}" .
  if [ -n "${PUSH:-}" ]; then "${ENGINE}" push "${image}"; fi
done

echo "images:"
for target in "${targets[@]}"; do
  image="${PREFIX}-${target}:${TAG}"
  echo "  ${image}  $("${ENGINE}" image inspect --format '{{.Size}}' "${image}" | awk '{printf "%.1f MB", $1/1e6}')"
done
