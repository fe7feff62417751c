#!/usr/bin/env bash
# The connection-form e2e test drives Debian's Chromium headless through Playwright (never `playwright
# install`: the browser comes from Debian's packages); install it where missing.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  echo "chromium not found: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null | head -1
