#!/usr/bin/env bash
# The connection-form e2e test drives Debian's Chromium headless through Playwright (never `playwright
# install`: the browser comes from Debian's packages); install it where missing.
#
#   ensure-chromium.sh          install where missing, then print the version
#   ensure-chromium.sh --start  the same in the background, and return at once
#   ensure-chromium.sh --wait   wait for the --start install (or install now if none was started), print the
#                               version; fail with the install's output if it failed
#
# make test starts the install before the virtualenv's and waits for it before the suite: on a fresh
# machine apt's 17 s (most of it one core unpacking) overlap the virtualenv's download and install instead
# of following them. The background install holds a lock on artifacts/chromium-install.lock until it ends
# (taken before it is forked, so a --wait can never run between the start and the lock).
set -euo pipefail
state=artifacts/chromium-install

install() {
  if [ ! -x /usr/bin/chromium ]; then
    echo "chromium not found: installing Debian's chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  fi
}

case "${1:-}" in
  --start)
    mkdir -p artifacts
    exec 9>"$state.lock"
    flock 9 # an install another run started ends first; then its files are this run's to replace
    rm -f "$state.status" "$state.log"
    (
      set +e
      install 9>&- # apt and what it starts do not hold the lock
      echo $? >"$state.status"
    ) </dev/null >"$state.log" 2>&1 &
    exit 0
    ;;
  --wait)
    if [ -e "$state.lock" ] && ! flock -w 1800 "$state.lock" true; then
      echo "chromium's install (artifacts/chromium-install.log) still holds its lock after 30 minutes" >&2
      exit 1
    fi
    if [ -e "$state.status" ]; then
      cat "$state.log" >&2 2>/dev/null || true
      status=$(cat "$state.status")
      rm -f "$state.status" "$state.log"
      if [ "$status" -ne 0 ]; then
        echo "installing chromium failed (exit $status)" >&2
        exit "$status"
      fi
    else
      install
    fi
    ;;
  "") install ;;
  *)
    echo "usage: $0 [--start | --wait]" >&2
    exit 2
    ;;
esac
/usr/bin/chromium --version 2>/dev/null | head -1
