"""A task's quality-gate review from the store: its training's figures against the
experiment's last published model, under the experiment's rule (config quality_gate)."""

from __future__ import annotations

from typing import Any

from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.quality_gate import Decision, Figures, GateRecord, judge
from fuxictr_workflow.domain.stages import Stage
from fuxictr_workflow.store import WorkflowStore


def review(store: WorkflowStore, cfg: WorkflowConfig, task: dict[str, Any]) -> GateRecord | None:
    """The gate's record for the task as it stands now; None when the gate is off for its
    experiment. A decision a person made stands while the training's figures are the ones
    decided on: a retry after a failed hive_upload does not ask again, nor does the gate's
    own retry when Airflow lost its resume (a person's retry of a rejected task does ask:
    the store forgets that rejection)."""
    rule = cfg.quality_gate.rule_for(task["experiment_id"])
    if not rule.enabled:
        return None
    model = Figures.of_train_result(store.step_result(task["id"], Stage.TRAIN))
    baseline_id = store.quality_gates.last_published(task["experiment_id"], other_than=task["id"])
    baseline = (
        Figures.of_train_result(store.step_result(baseline_id, Stage.TRAIN))
        if baseline_id is not None
        else None
    )
    verdict = judge(model, baseline, rule)
    record = GateRecord(
        decision=Decision.PASSED if verdict.passed else Decision.WAITING,
        auc=model.auc,
        logloss=model.logloss,
        baseline_task_id=baseline_id,
        baseline_auc=baseline.auc if baseline else None,
        baseline_logloss=baseline.logloss if baseline else None,
        max_auc_drop=rule.max_auc_drop,
        max_logloss_rise=rule.max_logloss_rise,
        reason=verdict.summary(),
    )
    earlier = stored_record(store, task["id"])
    if (
        record.decision == Decision.WAITING
        and earlier is not None
        and earlier.decision in (Decision.APPROVED, Decision.REJECTED)
        and (earlier.auc, earlier.logloss) == (record.auc, record.logloss)
    ):
        return earlier
    return record


def stored_record(store: WorkflowStore, task_id: int) -> GateRecord | None:
    row = store.gate(task_id)
    if row is None:
        return None
    return GateRecord.model_validate({name: row[name] for name in GateRecord.model_fields})


def decided(record: GateRecord, approved: bool, by: str | None) -> GateRecord:
    return record.model_copy(
        update={"decision": Decision.APPROVED if approved else Decision.REJECTED, "decided_by": by}
    )


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def describe(task: dict[str, Any], record: GateRecord) -> str:
    """The decision's text for Airflow's Required Actions (Markdown): both models side by side."""
    baseline = f"published model (task {record.baseline_task_id})"
    return "\n".join(
        [
            f"Workflow task **{task['id']}** ({task['name']}), experiment `{task['experiment_id']}`: "
            f"{record.reason}.",
            "",
            f"| | this training | {baseline} | allowed |",
            "|---|---|---|---|",
            f"| AUC | {_figure(record.auc)} | {_figure(record.baseline_auc)} | -{record.max_auc_drop} |",
            f"| logloss | {_figure(record.logloss)} | {_figure(record.baseline_logloss)} | "
            f"+{record.max_logloss_rise} |",
            "",
            f"**Approve** writes its predictions into `{task['hive_table']}`; **Reject** ends the "
            "task as rejected and writes nothing.",
        ]
    )


def rejection_message(record: GateRecord) -> str:
    who = f" by {record.decided_by}" if record.decided_by else ""
    return (
        f"rejected{who} at the quality gate: {record.reason} "
        f"(AUC {_figure(record.auc)} vs {_figure(record.baseline_auc)}, "
        f"logloss {_figure(record.logloss)} vs {_figure(record.baseline_logloss)}); nothing was published"
    )
