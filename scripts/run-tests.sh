#!/usr/bin/env bash
# Runs the pytest suite from the venv, tier by tier:
#   fast   tests that need no Airflow or Hive stack (minutes; the inner loop: make test-fast)
#   stack  tests on the real Airflow / Hive / sshd / FuXiCTR stack
#   stress the stand-in restart stress tests (make test-stress)
#   all    fast, then stack; a failure in fast stops the run before stack starts
# Usage: run-tests.sh [fast|stack|stress|all] [pytest args...]
# Each tier's wall time is appended to .work/test-tiers.txt (.ci/run prints it).
# pytest's exit code 5 (no tests collected) is a failure here: a tier that ran nothing must not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .work
tier=all
case "${1:-}" in fast | stack | stress | all) tier=$1; shift ;; esac

run_tier() {
  local name=$1 expr=$2
  shift 2
  local start rc
  start=$(date +%s)
  echo "=== tier $name: pytest -m \"$expr\" $*"
  .venv/bin/python -m pytest -m "$expr" "$@"
  rc=$?
  echo "tier $name: exit $rc in $(($(date +%s) - start)) s" | tee -a .work/test-tiers.txt
  if [ $rc -eq 5 ]; then
    echo "tier $name: pytest collected no tests: failing" >&2
    return 1
  fi
  return $rc
}

case $tier in
  fast) run_tier fast "not stack and not stress" "$@" ;;
  stack) run_tier stack "stack and not stress" "$@" ;;
  stress) run_tier stress "stress" "$@" ;;
  all)
    run_tier fast "not stack and not stress" "$@" || {
      echo "the fast tier failed: the stack tier is not run" >&2
      exit 1
    }
    run_tier stack "stack and not stress" "$@"
    ;;
esac
