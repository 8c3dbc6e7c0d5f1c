#!/usr/bin/env bash
# Runs the pytest suite from the venv, tier by tier:
#   fast   tests that need no Airflow or Hive stack (minutes; the inner loop: make test-fast)
#   stack  tests on the real Airflow / Hive / sshd / FuXiCTR stack (two lanes side by side,
#          unless pytest args are given: then one pytest)
#   stress the stand-in restart stress tests (make test-stress)
#   all    fast, then stack; the first failure in fast stops the run before stack starts
# Usage: run-tests.sh [fast|stack|stress|all] [pytest args...]
# Each tier's wall time is appended to .work/test-tiers.txt (.ci/run prints it); each pytest
# process writes its JUnit report (per-test times) to .work/junit-<tier>.xml.
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
  .venv/bin/python -m pytest -m "$expr" --junitxml=".work/junit-$name.xml" "$@"
  rc=$?
  echo "tier $name: exit $rc in $(($(date +%s) - start)) s" | tee -a .work/test-tiers.txt
  if [ $rc -eq 5 ]; then
    echo "tier $name: pytest collected no tests: failing" >&2
    return 1
  fi
  return $rc
}

# The fast tier on every core, one test module per worker (a module's fixtures, such as
# tests/fuxictr's background train/infer runs, stay in one process).
FAST_PARALLEL=(-n auto --dist loadfile)

# The stack tier in two pytest processes side by side, each with its own Hive server: the local
# e2e stack's pipelines wait on Airflow's scheduling much of the time, and the other lane's
# stacks (Celery e2e, security, API, UI, Hive) use that time. Lines are prefixed with the lane.
E2E_LANE=(tests/e2e/test_pipeline.py tests/e2e/test_single_stage.py tests/e2e/test_quality_gate.py)
run_stack_lanes() {
  local start rc_e2e rc_rest
  start=$(date +%s)
  echo "=== tier stack: two lanes side by side: [e2e] ${E2E_LANE[*]}, [rest] the other stack tests"
  .venv/bin/python -m pytest -m "stack and not stress" --junitxml=.work/junit-stack-e2e.xml "${E2E_LANE[@]}" 2>&1 |
    sed -u 's/^/[e2e] /' &
  local e2e=$!
  .venv/bin/python -m pytest -m "stack and not stress" --junitxml=.work/junit-stack-rest.xml \
    tests "${E2E_LANE[@]/#/--ignore=}" 2>&1 | sed -u 's/^/[rest] /' &
  local rest=$!
  wait $e2e
  rc_e2e=$?
  wait $rest
  rc_rest=$?
  echo "tier stack: exit e2e $rc_e2e, rest $rc_rest in $(($(date +%s) - start)) s" | tee -a .work/test-tiers.txt
  [ $rc_e2e -eq 0 ] && [ $rc_rest -eq 0 ]
}

case $tier in
  fast) run_tier fast "not stack and not stress" "${FAST_PARALLEL[@]}" "$@" ;;
  stack) if [ $# -eq 0 ]; then run_stack_lanes; else run_tier stack "stack and not stress" "$@"; fi ;;
  stress) run_tier stress "stress" "$@" ;;
  all)
    # the first failure ends the run: it shows within minutes, not after the stack tier
    run_tier fast "not stack and not stress" "${FAST_PARALLEL[@]}" --exitfirst "$@" || {
      echo "the fast tier failed: the stack tier is not run" >&2
      exit 1
    }
    if [ $# -eq 0 ]; then run_stack_lanes; else run_tier stack "stack and not stress" "$@"; fi
    ;;
esac
