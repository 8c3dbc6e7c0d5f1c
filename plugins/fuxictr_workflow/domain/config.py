"""Typed settings from config.yaml.

The file has the seed's four sections (servers, storage, transfer, task) with the seed's
defaults for the keys the package reads, plus the sections the stages need (hive, hdfs,
fuxictr, store, api). Keys nothing reads (DEPRECATED_KEYS) load with a warning until the
next release refuses them. Every error names the key path and the fix, e.g. ``transfer.chunk_size: must be > 0``,
and is raised at load time so a bad file never reaches a running stage.

The file path comes from ``$FUXICTR_WORKFLOW_CONFIG``; without it the packaged default is
used. Path values expand ``~`` and ``$VARS``; relative paths are relative to the file.
``$FUXICTR_WORKFLOW_HOME`` defaults to ``$AIRFLOW_HOME/fuxictr_workflow`` (or
``~/airflow/fuxictr_workflow``).
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

CONFIG_ENV = "FUXICTR_WORKFLOW_CONFIG"
HOME_ENV = "FUXICTR_WORKFLOW_HOME"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "config.yaml"

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

# Keys nothing reads, per section: a file that still sets one loads with a warning naming it.
DEPRECATED_KEYS: dict[str, tuple[str, ...]] = {
    "storage": ("shared_dir", "checkpoint_dir"),
    "fuxictr": ("label_column",),
}

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """config.yaml is unreadable or invalid; the message names the key path."""


def workflow_home() -> str:
    if os.environ.get(HOME_ENV):
        return os.environ[HOME_ENV]
    airflow_home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return os.path.join(airflow_home, "fuxictr_workflow")


def _expand(value: str, info: ValidationInfo) -> str:
    """Expand $VARS and ~; make a relative local path relative to the config file's directory."""
    env = {HOME_ENV: workflow_home(), **os.environ}
    expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)
    expanded = os.path.expanduser(expanded)
    base_dir = (info.context or {}).get("base_dir", Path.cwd())
    return os.path.normpath(os.path.join(base_dir, expanded))


def _expand_url(value: str, info: ValidationInfo) -> str:
    prefix = "sqlite:///"
    return prefix + _expand(value[len(prefix) :], info) if value.startswith(prefix) else value


LocalPath = Annotated[str, AfterValidator(_expand)]
StoreUrl = Annotated[str, AfterValidator(_expand_url)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]


class ServerConfig(_Section):
    """A training server: an Airflow SSH connection, or host/port/username/key_path."""

    ssh_conn_id: str | None = None
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535, strict=True)] = 22
    username: str | None = None
    key_path: LocalPath | None = None
    # known_hosts file used to verify the server's host key; None = ~/.ssh/known_hosts.
    known_hosts: LocalPath | None = None
    # Turning this off is an explicit choice and is logged as a warning on every connection.
    strict_host_key_checking: bool = True
    # Per-task work dirs live under <remote_root>/task_<id>/ on the server. A relative path is
    # under the SSH user's home; the stages create it 0700 and refuse one that is a symlink,
    # owned by someone else or group/world-writable (a shared /tmp path could be pre-planted).
    remote_root: str = "fuxictr_workflow"
    # Python on the server that has fuxictr installed (runs remote/runner.py).
    python: str = "python3"
    # Airflow pool slots: how many trainings this server runs at once.
    max_concurrent_trainings: PositiveInt = 1
    # FuXiCTR experiment config dir (model_config.yaml + dataset_config.yaml) on the server;
    # None = the demo config shipped with the package, copied by the train stage.
    fuxictr_config_dir: str | None = None
    # The user's FuXiCTR model_zoo checkout on the server (models are looked up by name there).
    model_zoo_path: str | None = None
    gpu: int | None = None

    @field_validator("key_path")
    @classmethod
    def _key_exists(cls, v: str | None) -> str | None:
        if v is not None and not os.path.isfile(v):
            raise ValueError(f"key file {v} does not exist")
        return v

    @model_validator(mode="after")
    def _conn_or_host(self) -> ServerConfig:
        if self.ssh_conn_id is None and (self.host is None or self.username is None):
            raise ValueError("give either ssh_conn_id or host and username (plus key_path)")
        return self


class StorageConfig(_Section):
    staging_dir: LocalPath = "${FUXICTR_WORKFLOW_HOME}/staging"
    # Per-task log files: <log_dir>/task_<id>/<YYYY-MM-DD_HH-MM-SS>.log
    log_dir: LocalPath = "${FUXICTR_WORKFLOW_HOME}/logs/workflow"
    # The most bytes a task's export (sample + infer, as Hive wrote them to HDFS) may hold:
    # checked before anything is copied to staging or the training server. null: no cap.
    max_export_bytes: PositiveInt | None = 100 * 1024**3


class TransferConfig(_Section):
    chunk_size: PositiveInt = 10485760
    max_retries: NonNegativeInt = 3
    parallel_workers: PositiveInt = 4
    verify_checksum: bool = True
    # First retry waits this long; each later one doubles it.
    retry_backoff_s: Annotated[float, Field(ge=0)] = 1.0
    # Seconds between progress lines in the workflow log.
    progress_interval_s: Annotated[float, Field(gt=0)] = 3.0


# Built-in execution timeouts (seconds): a day for training, 12 h for inference, 6 h otherwise.
DEFAULT_EXECUTION_TIMEOUT_S: dict[str, int] = {"default": 6 * 3600, "train": 24 * 3600, "infer": 12 * 3600}


class TaskConfig(_Section):
    heartbeat_interval: PositiveInt = 30
    log_rotation_size: PositiveInt = 104857600
    # Airflow retries a failed stage this many times (a transfer's chunks have their own
    # transfer.max_retries); the first retry waits retry_delay_s, later ones back off
    # exponentially.
    retries: NonNegativeInt = 3
    retry_delay_s: Annotated[float, Field(ge=0)] = 10.0
    # Who follows a training or inference job while it runs: the triggerer (the task defers
    # and frees its worker slot) or the worker (the task holds its slot until the job ends;
    # for deployments without a triggerer).
    follow_jobs_from: Literal["triggerer", "worker"] = "triggerer"
    # Airflow's execution_timeout of each stage, in seconds: `default` for every stage, a
    # stage's name for its own. A train or infer job is stopped when its stage's time is up.
    execution_timeout_s: dict[str, PositiveInt] = Field(
        default_factory=lambda: dict(DEFAULT_EXECUTION_TIMEOUT_S)
    )

    @field_validator("execution_timeout_s")
    @classmethod
    def _timeouts(cls, v: dict[str, int]) -> dict[str, int]:
        from fuxictr_workflow.domain.stages import STAGE_NAMES

        unknown = sorted(set(v) - {"default", *STAGE_NAMES})
        if unknown:
            raise ValueError(
                f"unknown stage(s) {', '.join(unknown)}; use default or one of {', '.join(STAGE_NAMES)}"
            )
        return v

    def execution_timeout(self, stage: str) -> int:
        """Seconds a stage may run: its own key, else the file's `default`, else the built-in one."""
        return self.execution_timeout_s.get(
            stage, self.execution_timeout_s.get("default", DEFAULT_EXECUTION_TIMEOUT_S["default"])
        )


class RetentionConfig(_Section):
    # Files of tasks that finished (completed, failed, cancelled or rejected) more than this many days
    # ago are deleted: staging, the training server's task dir, the HDFS export and hand-off
    # files, the per-task log files and the task's task_logs and transfer_chunks rows. The
    # task and its steps stay listed; the Hive table it loaded is never touched. null: keep all.
    days: PositiveInt | None = 30
    # When the maintenance DAG (fuxictr_workflow_maintenance) runs `cleanup`: a cron
    # expression or an Airflow preset such as @daily.
    schedule: str = "@daily"


NonNegativeFloat = Annotated[float, Field(ge=0)]


class GateOverride(_Section):
    """An experiment's own gate keys; a key not set is the global one."""

    enabled: bool | None = None
    max_auc_drop: NonNegativeFloat | None = None
    max_logloss_rise: NonNegativeFloat | None = None


class GateRule(_Section):
    """How much worse than the experiment's last published model a training may come out and
    still publish without a person's decision (validation AUC and logloss)."""

    enabled: bool
    max_auc_drop: NonNegativeFloat
    max_logloss_rise: NonNegativeFloat


class QualityGateConfig(_Section):
    """The gate before hive_upload. Off unless enabled (globally or per experiment): a held
    task waits for a person, which a deployment has to plan for."""

    enabled: bool = False
    max_auc_drop: NonNegativeFloat = 0.002
    max_logloss_rise: NonNegativeFloat = 0.002
    # A held task waits this long for its decision, then fails (Airflow's scheduler times it out).
    decision_timeout_h: Annotated[float, Field(gt=0)] = 72.0
    experiments: dict[str, GateOverride] = Field(default_factory=dict)

    def rule_for(self, experiment_id: str) -> GateRule:
        """The global keys with the experiment's own over them."""
        own = self.experiments.get(experiment_id, GateOverride()).model_dump(exclude_none=True)
        return GateRule(**{k: own.get(k, getattr(self, k)) for k in GateRule.model_fields})


IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# An hdfs_path URL's origin: scheme://host[:port] (file:// has no host).
ORIGIN_RE = re.compile(r"^(file://|(hdfs|webhdfs)://[A-Za-z0-9.-]+(:[0-9]{1,5})?)$")


def _absolute_paths(values: list[str]) -> list[str]:
    for value in values:
        if not value.startswith("/") or "//" in value or ".." in value.split("/"):
            raise ValueError(f"{value!r} must be an absolute path without '//' or '..'")
    return [value.rstrip("/") or "/" for value in values]


class HiveConfig(_Section):
    cli_conn_id: str = "hive_cli_default"
    hiveserver2_conn_id: str = "hiveserver2_default"
    # The databases hive_table may name; the package creates its predictions tables there
    # and never writes into a table it did not create.
    output_databases: list[str] = Field(default_factory=lambda: ["hive_db"], min_length=1)
    # HiveServer2's warehouse directory: hdfs_path may not lie inside it (the export
    # overwrites its directory, which would replace a table's files).
    warehouse_dir: str = "/user/hive/warehouse"
    # The SQL dialect the server speaks: user queries are parsed in it and re-rendered in it.
    # "hive" for HiveServer2, "spark" for the Spark Thrift Server.
    sql_dialect: Literal["hive", "spark"] = "hive"

    @field_validator("output_databases")
    @classmethod
    def _databases(cls, v: list[str]) -> list[str]:
        for name in v:
            if not IDENTIFIER_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a database name (letters, digits, _)")
        return [name.lower() for name in v]

    @field_validator("warehouse_dir")
    @classmethod
    def _warehouse(cls, v: str) -> str:
        """Kept as its path part: hdfs_path is refused inside it on any host."""
        return _absolute_paths([urlsplit(v).path if "://" in v else v])[0]


class HdfsConfig(_Section):
    # fsspec storage options per protocol, e.g. {"webhdfs": {"host": ..., "port": 9870}}
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The URL origins hdfs_path may use, e.g. ["hdfs://nn1:8020", "webhdfs://nn1:9870", "file://"].
    # Empty: only plain absolute paths, on the filesystem storage_options and the cluster's
    # defaults point at.
    allowed_urls: list[str] = Field(default_factory=list)
    # When set, hdfs_path must lie under one of these absolute paths.
    allowed_path_prefixes: list[str] = Field(default_factory=list)

    @field_validator("allowed_urls")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if not ORIGIN_RE.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} must be scheme://host[:port] with scheme hdfs or webhdfs, or file://"
                )
        return [origin.lower() for origin in v]

    @field_validator("allowed_path_prefixes")
    @classmethod
    def _prefixes(cls, v: list[str]) -> list[str]:
        return _absolute_paths(v)


class FuxictrConfig(_Section):
    # Columns carried through inference into the predictions table next to `score`.
    id_columns: list[str] = Field(default_factory=lambda: ["id"])
    valid_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    # Overrides the experiment's own `seed` (split and training) when set; null: the
    # experiment config's seed, as FuXiCTR's own flow uses it.
    seed: int | None = None
    infer_batch_size: PositiveInt = 8192


class ApiConfig(_Section):
    # Request bodies larger than this are refused with 413 before anything parses them.
    max_body_bytes: PositiveInt = 1048576
    # Open log WebSockets per user in one API-server worker process; more are closed (1013).
    max_websockets_per_user: PositiveInt = 20
    # Event batches queued for one WebSocket client; a client that falls further behind is
    # closed (1013) and resumes with after=N instead of growing the server's memory.
    websocket_queue_batches: PositiveInt = 64


class StoreConfig(_Section):
    url: StoreUrl = "sqlite:///${FUXICTR_WORKFLOW_HOME}/workflow.db"


class WorkflowConfig(_Section):
    servers: dict[str, ServerConfig]
    default_server: str | None = None
    storage: StorageConfig = Field(default_factory=StorageConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    hive: HiveConfig = Field(default_factory=HiveConfig)
    hdfs: HdfsConfig = Field(default_factory=HdfsConfig)
    fuxictr: FuxictrConfig = Field(default_factory=FuxictrConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    quality_gate: QualityGateConfig = Field(default_factory=QualityGateConfig)

    @model_validator(mode="before")
    @classmethod
    def _drop_deprecated(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out = dict(raw)
        for section, keys in DEPRECATED_KEYS.items():
            values = out.get(section)
            if not isinstance(values, dict):
                continue
            for key in keys:
                if key in values:
                    log.warning("config %s.%s: ignored; will be refused in the next release", section, key)
            out[section] = {k: v for k, v in values.items() if k not in keys}
        return out

    @model_validator(mode="before")
    @classmethod
    def _carry_old_meanings(cls, raw: Any) -> Any:
        """A key that used to mean two things keeps its old second meaning, with a warning
        naming the key that now carries it, until the config sets that key."""
        if not isinstance(raw, dict):
            return raw
        transfer, task = raw.get("transfer"), raw.get("task")
        if (
            isinstance(transfer, dict)
            and "max_retries" in transfer
            and not (isinstance(task, dict) and "retries" in task)
        ):
            log.warning(
                "config transfer.max_retries: setting the stages' Airflow retries with it is deprecated; "
                "set task.retries (taken from transfer.max_retries for now)"
            )
            raw = {
                **raw,
                "task": {**(task if isinstance(task, dict) else {}), "retries": transfer["max_retries"]},
            }
        return raw

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        if not v:
            raise ValueError("at least one training server is required")
        for name in v:
            if not NAME_RE.fullmatch(name):
                raise ValueError(f"server name {name!r} may only use letters, digits, _ . -")
        return v

    @model_validator(mode="after")
    def _default_server(self) -> WorkflowConfig:
        if self.default_server is None:
            object.__setattr__(self, "default_server", next(iter(self.servers)))
        elif self.default_server not in self.servers:
            raise ValueError(
                f"default_server: {self.default_server!r} is not one of the servers ({', '.join(self.servers)})"
            )
        return self

    def server(self, name: str | None = None) -> ServerConfig:
        key = name or self.default_server
        assert key is not None
        if key not in self.servers:
            raise KeyError(f"unknown server {key!r}; configured: {', '.join(self.servers)}")
        return self.servers[key]


_FRIENDLY = {
    "extra_forbidden": lambda e: "unknown key (check spelling; see the configuration reference in README.md)",
    "missing": lambda e: "required key is missing",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}",
    "less_than": lambda e: f"must be < {e['ctx']['lt']}",
    "less_than_equal": lambda e: f"must be <= {e['ctx']['le']}",
    "int_type": lambda e: f"must be an integer, got {e['input']!r}",
    "bool_type": lambda e: f"must be true or false, got {e['input']!r}",
    "string_type": lambda e: f"must be a string, got {e['input']!r}",
    "dict_type": lambda e: "must be a mapping of keys to values",
    "model_type": lambda e: "must be a mapping of keys to values",
}


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        friendly = _FRIENDLY.get(e["type"])
        msg = friendly(e) if friendly else e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid config {source}:\n  " + "\n  ".join(lines)


def parse_config(raw: Any, base_dir: Path, source: str = "<config>") -> WorkflowConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping of sections")
    try:
        return WorkflowConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> WorkflowConfig:
    """Load and validate config.yaml (explicit path, else $FUXICTR_WORKFLOW_CONFIG, else packaged)."""
    file = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH).expanduser()
    try:
        raw = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        hint = f" (from ${CONFIG_ENV})" if path is None and os.environ.get(CONFIG_ENV) else ""
        raise ConfigError(f"config file {file}{hint} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {file} is not valid YAML: {err}") from None
    return parse_config(raw, file.resolve().parent, str(file))


@lru_cache(maxsize=8)
def _cached(path: str, mtime: float) -> WorkflowConfig:
    return load_config(path)


def get_config() -> WorkflowConfig:
    """The active config, re-read when the file changes."""
    file = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH).expanduser().resolve()
    try:
        mtime = file.stat().st_mtime
    except FileNotFoundError:
        return load_config(file)
    return _cached(str(file), mtime)
