"""The workflow store: one object per URL over the parts of :mod:`fuxictr_workflow.store`."""

from __future__ import annotations

from fuxictr_workflow.store.chunks import ChunkLedger
from fuxictr_workflow.store.database import Database
from fuxictr_workflow.store.epochs import TaskEpochs
from fuxictr_workflow.store.gates import QualityGates
from fuxictr_workflow.store.logs import TaskLogs
from fuxictr_workflow.store.retention import Retention
from fuxictr_workflow.store.steps import Steps
from fuxictr_workflow.store.tasks import Tasks


class WorkflowStore:
    """All reads and writes of the workflow tables.

    The parts share one :class:`Database`; the store's methods are the parts' own, bound
    here, so callers need one object and each concern stays in its module.
    """

    def __init__(self, url: str, *, create: bool = False) -> None:
        self.url = url
        self.db = Database(url)
        self.tasks = Tasks(self.db)
        self.steps = Steps(self.db, self.tasks)
        self.chunk_ledger = ChunkLedger(self.db)
        self.logs = TaskLogs(self.db)
        self.task_epochs = TaskEpochs(self.db)
        self.retention = Retention(self.db)
        self.quality_gates = QualityGates(self.db, self.tasks)

        self.init = self.db.init
        self.schema_version = self.db.schema_version
        self.dispose = self.db.dispose

        self.create_task = self.tasks.create_task
        self.task_for_run = self.tasks.task_for_run
        self.find_task_by_run = self.tasks.find_task_by_run
        self.tasks_with_run_id = self.tasks.tasks_with_run_id
        self.set_dag_run = self.tasks.set_dag_run
        self.clear_dag_run = self.tasks.clear_dag_run
        self.claim_task = self.tasks.claim_task
        self.heartbeat = self.tasks.heartbeat
        self.fail_task = self.tasks.fail_task
        self.cancel_task = self.tasks.cancel_task
        self.get_task = self.tasks.get_task
        self.list_tasks = self.tasks.list_tasks
        self.task_servers = self.tasks.task_servers

        self.start_step = self.steps.start_step
        self.complete_step = self.steps.complete_step
        self.fail_step = self.steps.fail_step
        self.pause_step = self.steps.pause_step
        self.skip_steps = self.steps.skip_steps
        self.reset_from_step = self.steps.reset_from_step
        self.step_result = self.steps.step_result
        self.step_results = self.steps.step_results

        self.register_chunks = self.chunk_ledger.register_chunks
        self.mark_chunk = self.chunk_ledger.mark_chunk
        self.forget_chunks = self.chunk_ledger.forget_chunks
        self.chunks = self.chunk_ledger.chunks
        self.chunk_progress = self.chunk_ledger.chunk_progress

        self.append_log = self.logs.append_log
        self.append_job_lines = self.logs.append_job_lines
        self.job_log_position = self.logs.job_log_position
        self.logs_after = self.logs.logs_after

        self.epochs = self.task_epochs.epochs

        self.gate = self.quality_gates.gate

        if create:
            self.init()


_stores: dict[str, WorkflowStore] = {}


def get_store(url: str | None = None) -> WorkflowStore:
    """The process-wide store for a URL (default: the configured one), schema ensured."""
    if url is None:
        from fuxictr_workflow.domain.config import get_config

        url = get_config().store.url
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = WorkflowStore(url, create=True)
    return store
