#!/usr/bin/env bash
# The newcomer's first hour, measured: a fresh clone of a branch, a cold pip (and npm) cache, then
#   1. `make run` until the exchange answers /readyz, and
#   2. `make install-test` (what `make test` installs first) in that clone.
# Usage: scripts/first-hour.sh [repository] [branch]   (defaults: this repository, its current branch)
# Prints one line per figure; the clone and caches are removed afterwards.
set -euo pipefail
repo=${1:-$(git rev-parse --show-toplevel)}
branch=${2:-$(git -C "$repo" rev-parse --abbrev-ref HEAD)}
work=$(mktemp -d /tmp/lhcie-first-hour.XXXXXX)
port=${LHCIE_HTTP_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
server=""
cleanup() {
  if [[ -n "$server" ]]; then kill -- "-$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
git clone --quiet --branch "$branch" "$repo" "$work/lhcie"
cd "$work/lhcie"
export PIP_CACHE_DIR="$work/pip-cache" npm_config_cache="$work/npm-cache" LHCIE_HTTP_PORT="$port"
export LHCIE_DATA_DIR="$work/lhcie/.lhcie" HOME="$work/home"
mkdir -p "$HOME"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
begin=$(date +%s.%N)
setsid make run >"$work/run.log" 2>&1 &
server=$!
installed=""
until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/run.log"; echo "make run exited"; exit 1; fi
  [[ -z "$installed" && -e .venv/.runtime ]] && installed=$(date +%s.%N)
  sleep 0.2
done
ready=$(date +%s.%N)
printf 'make run: /readyz answered after %.0f s (runtime install %.0f s, then start-up %.0f s)\n' \
  "$(echo "$ready - $begin" | bc)" "$(echo "$installed - $begin" | bc)" "$(echo "$ready - $installed" | bc)"
kill -- "-$server"; wait "$server" 2>/dev/null || true; server=""
# The test install from nothing too: a newcomer whose first command is `make test`.
rm -rf .venv "$PIP_CACHE_DIR" "$npm_config_cache"
begin=$(date +%s.%N)
make install-test >"$work/install-test.log" 2>&1 || { cat "$work/install-test.log"; exit 1; }
done_at=$(date +%s.%N)
printf 'make install-test (fresh .venv, cold caches): %.0f s, .venv %s\n' "$(echo "$done_at - $begin" | bc)" \
  "$(du -sh .venv | cut -f1)"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
