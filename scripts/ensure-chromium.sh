#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright (never `playwright install`): install the
# package if it is missing. Used by `make test` and CI.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
[ -x /usr/bin/chromium ] && exit 0
echo "installing chromium (Debian package)"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
