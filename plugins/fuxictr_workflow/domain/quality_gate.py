"""The quality gate's judgement: a training against the experiment's last published model.

Plain Python, no Airflow and no store: the gate operator (operators/gate.py) feeds it the
train step's recorded metrics and the baseline's, and acts on the verdict. Run-to-run noise
of one model on the same data is ~0.0001-0.002 AUC, so the rule compares deltas against the
experiment's own history, never an absolute AUC.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from fuxictr_workflow.domain.config import GateRule


class Decision(StrEnum):
    PASSED = "passed"
    WAITING = "waiting"
    APPROVED = "approved"
    REJECTED = "rejected"


class GateRecord(BaseModel):
    """What the gate compared and decided (the figures are validation AUC / logloss): the
    store's row and the API's `quality_gate` both come from it."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    auc: float | None
    logloss: float | None
    baseline_task_id: int | None
    baseline_auc: float | None
    baseline_logloss: float | None
    max_auc_drop: float
    max_logloss_rise: float
    reason: str
    decided_by: str | None = None


@dataclass(frozen=True)
class Figures:
    """A model's validation AUC and logloss (None: the training did not report it)."""

    auc: float | None
    logloss: float | None

    @classmethod
    def of_train_result(cls, result: dict[str, Any] | None) -> Figures:
        """From the train step's result: its `auc`/`logloss`, or, for a multi-task model that
        reports them per task only, their mean over the tasks."""
        result = result or {}
        per_task = [t for t in (result.get("tasks") or {}).values() if isinstance(t, dict)]

        def figure(name: str) -> float | None:
            if isinstance(result.get(name), int | float):
                return float(result[name])
            values = [float(t[name]) for t in per_task if isinstance(t.get(name), int | float)]
            return statistics.fmean(values) if values else None

        return cls(figure("auc"), figure("logloss"))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]

    def summary(self) -> str:
        return "; ".join(self.reasons)


def judge(model: Figures, baseline: Figures | None, rule: GateRule) -> Verdict:
    """Pass unless the model is worse than the baseline by more than the rule allows. No
    baseline yet passes; a model whose figures are missing cannot be judged, and is held."""
    if baseline is None:
        return Verdict(True, ("no published model of this experiment to compare with",))
    if model.auc is None or model.logloss is None:
        return Verdict(False, ("the training reported no validation AUC and logloss to compare",))
    reasons: list[str] = []
    if baseline.auc is not None and baseline.auc - model.auc > rule.max_auc_drop:
        reasons.append(
            f"AUC {model.auc:.4f} is {baseline.auc - model.auc:.4f} below the published "
            f"model's {baseline.auc:.4f} (allowed: {rule.max_auc_drop})"
        )
    if baseline.logloss is not None and model.logloss - baseline.logloss > rule.max_logloss_rise:
        reasons.append(
            f"logloss {model.logloss:.4f} is {model.logloss - baseline.logloss:.4f} above the "
            f"published model's {baseline.logloss:.4f} (allowed: {rule.max_logloss_rise})"
        )
    if reasons:
        return Verdict(False, tuple(reasons))
    return Verdict(True, ("within the allowed distance of the published model",))
