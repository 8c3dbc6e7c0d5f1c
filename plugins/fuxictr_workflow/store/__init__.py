"""The workflow store: tasks, their steps, transfer chunks and logs in SQLite or PostgreSQL.

One module per concern: :mod:`.database` (tables, migrations, connections), :mod:`.tasks`,
:mod:`.steps` (the step state machine), :mod:`.chunks` (the transfer-chunk ledger) and
:mod:`.logs` (with :mod:`.epochs`, the per-epoch metrics its job lines carry);
:class:`WorkflowStore` puts them behind one object. The store knows nothing of Airflow.
"""

from fuxictr_workflow.store.chunks import ChunkLedger, ChunkSpec
from fuxictr_workflow.store.database import MIGRATIONS, SCHEMA_VERSION, Database, iso, utcnow
from fuxictr_workflow.store.epochs import EpochRecord
from fuxictr_workflow.store.errors import IllegalTransition, NotFound, StoreError
from fuxictr_workflow.store.logs import TaskLogs
from fuxictr_workflow.store.steps import Steps
from fuxictr_workflow.store.tasks import Tasks
from fuxictr_workflow.store.workflow import WorkflowStore, get_store

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ChunkLedger",
    "ChunkSpec",
    "Database",
    "EpochRecord",
    "IllegalTransition",
    "NotFound",
    "Steps",
    "StoreError",
    "TaskLogs",
    "Tasks",
    "WorkflowStore",
    "get_store",
    "iso",
    "utcnow",
]
