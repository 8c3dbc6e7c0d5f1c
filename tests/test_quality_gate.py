"""The quality gate's judgement, its config, and its records in the store (SQLite and
PostgreSQL): the figures a task is judged by, its baseline, and the task status each decision
sets. The gate's wait for a person and Airflow's side of it: tests/e2e/test_quality_gate.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fuxictr_workflow import gate_review
from fuxictr_workflow.domain.config import ConfigError, GateRule, WorkflowConfig, parse_config
from fuxictr_workflow.domain.quality_gate import Decision, Figures, judge
from fuxictr_workflow.domain.stages import STAGE_NAMES
from fuxictr_workflow.store import IllegalTransition, WorkflowStore
from tests.conftest import migrated_from, new_task
from tests.services.postgres import reset_database

RULE = GateRule(enabled=True, max_auc_drop=0.002, max_logloss_rise=0.002)
SERVER = {"servers": {"s": {"host": "h", "username": "u"}}}


@pytest.mark.parametrize(
    ("model", "baseline", "passed", "named"),
    [
        (Figures(0.70, 0.50), None, True, "no published model"),
        (Figures(0.7981, 0.4502), Figures(0.80, 0.45), True, "within"),  # -0.0019 / +0.0002
        (Figures(0.797, 0.45), Figures(0.80, 0.45), False, "AUC 0.7970 is 0.0030 below"),
        (Figures(0.80, 0.4530), Figures(0.80, 0.45), False, "logloss 0.4530 is 0.0030 above"),
        (Figures(0.85, 0.40), Figures(0.80, 0.45), True, "within"),  # better: always passes
        (Figures(None, None), Figures(0.80, 0.45), False, "reported no validation AUC"),
    ],
)
def test_a_training_is_judged_by_its_distance_to_the_published_model(
    model: Figures, baseline: Figures | None, passed: bool, named: str
) -> None:
    verdict = judge(model, baseline, RULE)
    assert verdict.passed is passed and named in verdict.summary()


def test_both_figures_worse_name_both_reasons() -> None:
    verdict = judge(Figures(0.5, 0.69), Figures(0.8, 0.45), RULE)
    assert not verdict.passed and len(verdict.reasons) == 2


def test_a_multitask_models_figures_are_its_tasks_mean() -> None:
    result = {"tasks": {"click": {"auc": 0.8, "logloss": 0.4}, "buy": {"auc": 0.6, "logloss": 0.2}}}
    assert Figures.of_train_result(result) == Figures(pytest.approx(0.7), pytest.approx(0.3))
    assert Figures.of_train_result({"auc": 0.9, "logloss": 0.1, **result}) == Figures(0.9, 0.1)
    assert Figures.of_train_result(None) == Figures(None, None)


def test_an_experiments_own_keys_override_the_global_ones() -> None:
    cfg = parse_config(
        {**SERVER, "quality_gate": {"max_auc_drop": 0.01, "experiments": {"e1": {"enabled": True}}}},
        Path("/"),
    )
    assert cfg.quality_gate.rule_for("e1") == GateRule(
        enabled=True, max_auc_drop=0.01, max_logloss_rise=0.002
    )
    assert not cfg.quality_gate.rule_for("e2").enabled  # off unless enabled


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_auc_drop": -0.1}, "quality_gate.max_auc_drop: must be >= 0"),
        ({"experiments": {"e1": {"max_logloss_rise": -1}}}, "quality_gate.experiments.e1.max_logloss_rise"),
        ({"experiments": {"e1": {"enabeld": True}}}, "quality_gate.experiments.e1.enabeld: unknown key"),
        ({"decision_timeout_h": 0}, "quality_gate.decision_timeout_h: must be > 0"),
    ],
)
def test_a_bad_gate_key_is_named(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config({**SERVER, "quality_gate": section}, Path("/"))


# -- the store: records, baseline and the status each decision sets --


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WorkflowStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        reset_database(url)
    db = WorkflowStore(url, create=True)
    yield db
    db.dispose()


def trained(
    store: WorkflowStore, auc: float, logloss: float, *, publish: bool, experiment: str = "e1"
) -> int:
    """A task run through train (with these figures) and result_download; `publish` completes it."""
    task_id = new_task(store, experiment_id=experiment)
    for step in STAGE_NAMES[: -1 if not publish else None]:
        store.start_step(task_id, step)
        store.complete_step(task_id, step, {"auc": auc, "logloss": logloss} if step == "train" else {})
    return task_id


@pytest.fixture
def gate_config(make_config: Callable[..., WorkflowConfig]) -> WorkflowConfig:
    return make_config(quality_gate={"experiments": {"e1": {"enabled": True}}})


def test_the_baseline_is_the_experiments_last_published_task(
    store: WorkflowStore, gate_config: WorkflowConfig
) -> None:
    older = trained(store, 0.80, 0.45, publish=True)
    newer = trained(store, 0.78, 0.46, publish=True)
    trained(store, 0.90, 0.30, publish=False)  # never published: not a baseline
    trained(store, 0.95, 0.20, publish=True, experiment="e2")  # another experiment's
    task_id = trained(store, 0.7795, 0.4601, publish=False)
    record = gate_review.review(store, gate_config, store.get_task(task_id))
    assert record is not None and record.decision == Decision.PASSED
    assert (record.baseline_task_id, record.baseline_auc) == (newer, 0.78) and newer > older
    assert gate_review.review(store, gate_config, {**store.get_task(task_id), "experiment_id": "e3"}) is None


def test_a_held_task_waits_then_approve_runs_it_on(store: WorkflowStore, gate_config: WorkflowConfig) -> None:
    trained(store, 0.80, 0.45, publish=True)
    task_id = trained(store, 0.60, 0.60, publish=False)
    record = gate_review.review(store, gate_config, store.get_task(task_id))
    assert record is not None and record.decision == Decision.WAITING
    store.quality_gates.hold(task_id, record)
    assert store.get_task(task_id, with_steps=False)["status"] == "waiting"
    store.quality_gates.approve(task_id, gate_review.decided(record, True, "alice"))
    assert store.get_task(task_id, with_steps=False)["status"] == "running"
    assert store.gate(task_id)["decision"] == "approved" and store.gate(task_id)["decided_by"] == "alice"
    # asked again for the same training (a retry after a failed hive_upload): still approved
    again = gate_review.review(store, gate_config, store.get_task(task_id))
    assert again is not None and again.decision == Decision.APPROVED


def test_a_rejected_task_ends_rejected_with_nothing_published_and_can_be_retried(
    store: WorkflowStore, gate_config: WorkflowConfig
) -> None:
    trained(store, 0.80, 0.45, publish=True)
    task_id = trained(store, 0.60, 0.60, publish=False)
    record = gate_review.review(store, gate_config, store.get_task(task_id))
    assert record is not None
    store.quality_gates.hold(task_id, record)
    rejected = gate_review.decided(record, False, "bob")
    store.quality_gates.reject(task_id, rejected, gate_review.rejection_message(rejected))
    task = store.get_task(task_id)
    assert task["status"] == "rejected" and task["completed_at"] is not None
    assert "rejected by bob" in task["error_message"] and "AUC 0.6000 vs 0.8000" in task["error_message"]
    assert task["steps"][-1]["status"] == "skipped"
    with pytest.raises(IllegalTransition):
        store.quality_gates.approve(task_id, rejected)  # a final task takes no decision
    assert store.reset_from_step(task_id) == "hive_upload"
    assert store.get_task(task_id, with_steps=False)["status"] == "pending"


def test_a_cancelled_task_is_not_held(store: WorkflowStore, gate_config: WorkflowConfig) -> None:
    task_id = trained(store, 0.60, 0.60, publish=False)
    record = gate_review.review(store, gate_config, store.get_task(task_id))
    assert record is not None
    store.cancel_task(task_id)
    with pytest.raises(IllegalTransition, match="cancelled"):
        store.quality_gates.hold(task_id, record)


def test_migration_to_v6_adds_the_gate_table(store: WorkflowStore) -> None:
    task_id = new_task(store)

    migrated_from(store, 5, "DROP TABLE quality_gates")
    assert store.gate(task_id) is None


def test_an_answer_airflow_accepted_stands_for_the_gates_retry_but_a_persons_retry_asks_again(
    store: WorkflowStore, gate_config: WorkflowConfig
) -> None:
    """Airflow can lose the gate's resume after accepting the answer (the gate's task instance
    is failed as a state mismatch, then retried): the answer the API recorded is what the retry
    carries out. A person retrying a rejected task wants it reviewed again."""
    trained(store, 0.80, 0.45, publish=True)
    task_id = trained(store, 0.60, 0.60, publish=False)
    record = gate_review.review(store, gate_config, store.get_task(task_id))
    assert record is not None
    store.quality_gates.hold(task_id, record)
    assert store.quality_gates.record_answer(task_id, Decision.REJECTED, "bob")
    assert not store.quality_gates.record_answer(task_id, Decision.APPROVED, "eve")  # answered already
    again = gate_review.review(store, gate_config, store.get_task(task_id))
    assert again is not None and (again.decision, again.decided_by) == (Decision.REJECTED, "bob")
    store.quality_gates.reject(task_id, again, gate_review.rejection_message(again))
    store.reset_from_step(task_id)
    fresh = gate_review.review(store, gate_config, store.get_task(task_id))
    assert fresh is not None and fresh.decision == Decision.WAITING
