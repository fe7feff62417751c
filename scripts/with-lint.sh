#!/usr/bin/env bash
# make test: runs `make lint` beside the command it is given (the suite) instead of before it. mypy without a
# cache (a fresh clone) keeps one core busy for most of a minute before the first test could start, while the
# suite never keeps every core busy: lint runs at a lower priority, on what the suite leaves. Its output is
# printed in one piece after the command's, and this fails if either fails (the command's status first).
set -uo pipefail

log=$(mktemp -t deyel-lint.XXXXXX)
# A session of its own (setsid), so that an interrupted run stops mypy too, not only make.
setsid -w nice -n 10 "${MAKE:-make}" --no-print-directory lint >"$log" 2>&1 &
lint=$!
stop_lint() {
  if [ -n "$lint" ]; then kill -TERM -- "-$lint" 2>/dev/null; fi
  rm -f "$log"
}
trap stop_lint EXIT

"$@"
tests=$?

wait "$lint"
linted=$?
lint=
echo
if [ "$linted" -eq 0 ]; then
  echo "== make lint (ran beside the tests): passed"
else
  echo "== make lint (ran beside the tests): FAILED (exit $linted)"
fi
cat "$log"
if [ "$tests" -ne 0 ]; then
  exit "$tests"
fi
exit "$linted"
