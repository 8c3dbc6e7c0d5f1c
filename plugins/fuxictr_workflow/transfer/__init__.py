"""Chunked, parallel, verified, resumable SSH transfer (no Airflow imports; see docs/transfer.md)."""

from fuxictr_workflow.transfer.engine import TransferResult, download, transfer, upload
from fuxictr_workflow.transfer.errors import ConnectionLost, TransferError, UnsafePath
from fuxictr_workflow.transfer.params import TransferHooks, TransferParams
from fuxictr_workflow.transfer.plan import TransferItem, check_local, check_remote, chunk_id
from fuxictr_workflow.transfer.progress import Progress

__all__ = [
    "ConnectionLost",
    "Progress",
    "TransferError",
    "TransferHooks",
    "TransferItem",
    "TransferParams",
    "TransferResult",
    "UnsafePath",
    "check_local",
    "check_remote",
    "chunk_id",
    "download",
    "transfer",
    "upload",
]
