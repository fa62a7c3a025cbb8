#!/usr/bin/env bash
# Build the six LHCIE images (five services and the cli) from deploy/Dockerfile with OCI labels.
#   scripts/build-images.sh                      # lhcie-<target>:<version> in the local engine
#   REGISTRY=ghcr.io/example PUSH=1 scripts/build-images.sh
# Needs a Docker engine with BuildKit (docker buildx); run from anywhere in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v docker >/dev/null 2>&1 || { echo "docker is not installed: images need a Docker engine" >&2; exit 1; }

VERSION="${VERSION:-$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")}"
REVISION="${REVISION:-$(git rev-parse --verify --quiet HEAD || echo unknown)}"
SOURCE_URL="${SOURCE_URL:-$(git remote get-url origin 2>/dev/null || echo unknown)}"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
PREFIX="${REGISTRY:+${REGISTRY%/}/}lhcie"

for target in intake storage notification audit agreements care cli; do
  image="${PREFIX}-${target}:${VERSION}"
  echo "building ${image}"
  docker build --file deploy/Dockerfile --target "${target}" --tag "${image}" \
    --build-arg VERSION="${VERSION}" --build-arg REVISION="${REVISION}" \
    --build-arg CREATED="${CREATED}" --build-arg SOURCE_URL="${SOURCE_URL}" .
  if [ -n "${PUSH:-}" ]; then docker push "${image}"; fi
done
