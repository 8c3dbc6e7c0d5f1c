#!/usr/bin/env bash
# Runs the whole pytest suite from the venv. pytest's exit code 5 (no tests collected)
# is a failure here: a suite that ran nothing must not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .work
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
