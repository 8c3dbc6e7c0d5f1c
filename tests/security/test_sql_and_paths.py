"""Hostile sample_sql / infer_sql / hdfs_path / hive_table against the real stack.

Every hostile input goes through the real API server (POST /api/workflow/tasks → 422 naming
the field, no task stored) and through a stage's re-check (a task row written straight into
the store, as a bypassed API would leave it; the stage fails naming the field before beeline
starts). Nothing may happen. Each case checks what it decides itself: no marker file appears
on the worker, the listener on 127.0.0.2 (standing for a host outside the allowlist) sees no
connection. What only the Hive server can tell is checked once, after all the cases
(test_no_hostile_statement_reached_the_server): the sentinel table keeps its row, the server
received no statement while a hostile case ran (each case records the part of the server's
log written meanwhile), and its log holds none of the hostile statements (each case tags its
statements with its own marker, so a statement found there names its case). Controls show
that the same attacks do work when the text reaches beeline unchecked, and that the server's
log shows what beeline sent while it ran, so these checks can fail. Legitimate SQL (CTEs,
joins, windows, LATERAL VIEW explode, `%`, `<>`, `;` in a string, a trailing comment) passes
the API and runs on the real server with the right row counts.
"""

from __future__ import annotations

import re
import select
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fuxictr_workflow.domain import paths
from fuxictr_workflow.domain.config import WorkflowConfig
from fuxictr_workflow.domain.sql_query import session_settings, substitution_off
from fuxictr_workflow.domain.stages import StepStatus
from fuxictr_workflow.domain.validation import render_select
from fuxictr_workflow.orchestration.operators.hive import (
    HdfsDownloadOperator,
    HdfsUploadOperator,
    HiveExportOperator,
    HiveLoadOperator,
    render,
)
from fuxictr_workflow.store import get_store
from scripts.hive_server import HiveInfo, HiveServer
from tests.conftest import new_task, newest_task_id
from tests.security.stack import ALLOWED_PREFIX, ALLOWED_URL, DB, call
from tests.services.airflow_app import ApiServer
from tests.services.hive import hive_config, hive_query, submitted_queries
from tests.test_hive import context, step

pytestmark = pytest.mark.timeout(600)

# Not named "sentinel": tests/test_hive.py looks for DROPs of its own sentinel in the shared server log.
SENTINEL = f"{DB}.keepme"
# A token no legitimate statement contains: if it shows up in the server log, a hostile
# statement reached Hive. Each case sends it as MARK_<api|stage><case number> (tag()), so the
# statement names the case that sent it.
MARK = "zz_hostile_marker"


# ---------------------------------------------------------------------------------------
# The hostile inputs. {marker} is a file on the worker the attack would create, {port} the
# port of the foreign listener on 127.0.0.2, {warehouse} the server's warehouse directory.

HOSTILE_SQL: list[tuple[str, str]] = [
    # beeline splits on ';' itself
    ("stacked statement", f"SELECT 1 AS {MARK}; DROP TABLE {SENTINEL}"),
    ("stacked after a string", f"SELECT 'x' AS {MARK};DROP TABLE {SENTINEL};"),
    # beeline drops lines starting with '#': a quote there hides the rest from a lexer
    ("# line hides a quote", f"SELECT 1 AS {MARK}\n#';\n;DROP TABLE {SENTINEL};--'"),
    ("# line alone", f"SELECT 1 AS {MARK}\n# ; DROP TABLE {SENTINEL}"),
    # beeline reads a backslash inside backticks as an ordinary character
    ("backslash in backticks", f"SELECT 1 AS `{MARK}\\`; DROP TABLE {SENTINEL}; SELECT `x`"),
    ("backslash in backticks, quoted rest", f"SELECT `a\\`, ';' AS {MARK}; DROP TABLE {SENTINEL} --`"),
    # beeline client commands
    ("!sh client command", f"SELECT 1 AS {MARK}\n!sh touch {{marker}}"),
    ("!run client command", f"SELECT 1 AS {MARK}\n!run {{marker}}.hql"),
    ("!sh after a comment", f"SELECT 1 AS {MARK} -- done\n!sh touch {{marker}}"),
    # programs on the server
    ("TRANSFORM USING", f"SELECT TRANSFORM(id) USING 'touch {{marker}}' AS ({MARK}) FROM {DB}.events"),
    ("TRANSFORM in a subquery", f"SELECT * FROM (SELECT TRANSFORM(id) USING 'touch {{marker}}' AS (x) FROM {DB}.events) {MARK}"),
    ("MAP USING", f"FROM {DB}.events MAP id USING 'touch {{marker}}' AS {MARK}"),
    ("REDUCE USING", f"FROM {DB}.events REDUCE id USING 'touch {{marker}}' AS {MARK}"),
    # Java calls and functions that are not built in
    ("reflect", f"SELECT reflect('java.lang.Runtime', 'getRuntime') AS {MARK}"),
    ("java_method", f"SELECT java_method('java.lang.System', 'getenv', 'HOME') AS {MARK}"),
    ("try_reflect", f"SELECT try_reflect('java.lang.System', 'getenv', 'HOME') AS {MARK}"),
    ("unknown function", f"SELECT evil_udf(id) AS {MARK} FROM {DB}.events"),
    ("qualified user function", f"SELECT default.evil_udf(id) AS {MARK} FROM {DB}.events"),
    ("xpath (XML entities)", f"SELECT xpath_string('<a/>', 'a') AS {MARK}"),
    # variable substitution leaks server settings into the exported data
    ("${env:...}", f"SELECT '${{env:HOME}}' AS {MARK}"),
    ("${system:...}", f"SELECT '${{system:user.name}}' AS {MARK}"),
    ("${hiveconf:...}", f"SELECT '${{hiveconf:javax.jdo.option.ConnectionPassword}}' AS {MARK}"),
    ("${hivevar:...}", f"SELECT '${{hivevar:x}}' AS {MARK}"),
    ("${...} in a comment", f"SELECT 1 AS {MARK} -- ${{env:HOME}}"),
    # other statement kinds, files instead of tables
    ("DROP", f"DROP TABLE {SENTINEL}"),
    ("INSERT OVERWRITE", f"INSERT OVERWRITE TABLE {SENTINEL} SELECT 1 AS {MARK}"),
    ("WITH ... INSERT", f"WITH {MARK} AS (SELECT 1) INSERT OVERWRITE TABLE {SENTINEL} SELECT * FROM {MARK}"),
    ("SET", f"SET {MARK}=1"),
    ("file read as a table", f"SELECT * FROM parquet.`/etc/{MARK}`"),
    # Spark reads a file where the database part names a data source: conf/ is in the
    # Thrift Server's working directory (its hive-site.xml)
    ("SQL on file: text.conf", f"SELECT value AS {MARK} FROM text.conf"),
    ("SQL on file: binaryFile.", f"SELECT content AS {MARK} FROM `binaryFile`.`conf`"),
    ("SQL on file: json., catalog-qualified", f"SELECT * FROM spark_catalog.json.{MARK}"),
    # spark-avro opens the URL of the avroSchemaUrl option
    ("from_avro schema URL", f"SELECT from_avro(CAST('x' AS BINARY), '{{}}', "
                             f"map('avroSchemaUrl', 'http://127.0.0.2:{{port}}/s')) AS {MARK}"),
    # a function only Hive defines: on the Spark server it names a user function
    ("Hive-only function on Spark", f"SELECT floor_day(current_date()) AS {MARK}"),
    # checking costs: an 80,000-character query, about 600 nested parentheses
    ("80,000 characters", f"SELECT {'1+' * 39_980}1 AS {MARK}"),
    ("600 nested parentheses", f"SELECT {'(' * 600}1{')' * 600} AS {MARK}"),
]  # fmt: skip

HOSTILE_PATHS: list[tuple[str, str]] = [
    ("..", f"/data/../{MARK}"),
    ("%2e%2e", f"/data/%2e%2e/{MARK}"),
    ("%2E%2e", f"/data/%2E%2e/{MARK}"),
    ("double-encoded ..", f"/data/%252e%252e/{MARK}"),
    ("half-encoded ..", f"/data/.%2e/{MARK}"),
    ("foreign webhdfs host", f"webhdfs://127.0.0.2:{{port}}/{MARK}"),
    ("foreign hdfs host", f"hdfs://127.0.0.2:{{port}}/{MARK}"),
    ("allowed host, other port", f"webhdfs://127.0.0.1:1/{MARK}"),
    ("user in the URL", f"webhdfs://x@127.0.0.2:{{port}}/{MARK}"),
    ("authority by //", f"//127.0.0.2:{{port}}/{MARK}"),
    ("file:// not allowed", f"file:///tmp/{MARK}"),
    ("s3", f"s3://bucket/{MARK}"),
    ("warehouse", f"{{warehouse}}/{DB}.db/keepme"),
    ("warehouse root", "{warehouse}"),
    # globs: fsspec and LOAD DATA INPATH expand them into other directories
    ("glob *", f"/data/*/{MARK}"),
    ("glob {a,b}", f"/data/{{a,b}}/{MARK}"),
    ("glob [ab]", f"/data/[ab]/{MARK}"),
]

HOSTILE_TABLES: list[tuple[str, str]] = [
    ("database not allowed", f"default.{MARK}"),
    ("statement in the name", f"{DB}.x; DROP TABLE {SENTINEL}"),
]


# ---------------------------------------------------------------------------------------
# The legitimate queries, with the rows each returns from the `events` table below.

LEGIT_SQL: list[tuple[str, str, int]] = [
    ("CTE", f"WITH per_user AS (SELECT user_id, sum(amount) AS total FROM {DB}.events GROUP BY user_id) "
            "SELECT * FROM per_user WHERE total > 4.5", 2),
    ("join", f"SELECT e.id, u.user_id FROM {DB}.events e JOIN (SELECT DISTINCT user_id FROM {DB}.events "
             "WHERE id <= 2) u ON e.user_id = u.user_id", 2),
    ("window", "SELECT * FROM (SELECT id, user_id, row_number() OVER (PARTITION BY user_id ORDER BY amount DESC) "
               f"AS rn FROM {DB}.events) r WHERE rn = 1", 3),
    ("LATERAL VIEW explode", f"SELECT id, tag FROM {DB}.events LATERAL VIEW explode(tags) t AS tag", 7),
    ("LATERAL VIEW OUTER posexplode", f"SELECT id, pos FROM {DB}.events LATERAL VIEW OUTER posexplode(tags) p AS pos, tag", 8),
    ("% in LIKE", f"SELECT id FROM {DB}.events WHERE s LIKE '1%'", 1),
    ("% in a string", f"SELECT id FROM {DB}.events WHERE s = '100%'", 1),
    ("<>", f"SELECT id FROM {DB}.events WHERE user_id <> 10", 3),
    ("; in a string", f"SELECT id FROM {DB}.events WHERE s = 'a;b'", 1),
    ("trailing -- comment", f"SELECT id FROM {DB}.events WHERE id > 3 -- the last two", 2),
    ("quote in a string", f"SELECT id FROM {DB}.events WHERE s = 'it\\'s'", 1),
    ("backslash in a string", f"SELECT id FROM {DB}.events WHERE s = 'back\\\\slash'", 1),
    ("-- in a string", f"SELECT id FROM {DB}.events WHERE s = 'x -- y'", 1),
    ("UNION ALL", f"SELECT id FROM {DB}.events WHERE id = 1 UNION ALL SELECT id FROM {DB}.events WHERE id = 2", 2),
    ("built-ins", "SELECT id, concat_ws(',', tags) AS joined, nvl(s, '') AS s2, date_add('2024-01-01', 1) AS d, "
                  "if(amount > 2, 'hi', 'lo') AS band, get_json_object('{\"a\": 1}', '$.a') AS j, "
                  f"regexp_extract(s, '([a-z]+)', 1) AS word FROM {DB}.events", 5),
    ("multi-line with comments and ;", f"SELECT id\n  -- keep these\n  , amount\nFROM {DB}.events\n"
                                        "WHERE amount >= 3.0 /* three */;", 3),
]  # fmt: skip

EVENTS = [  # id, user_id, tags, s, amount
    (1, 10, ["a", "b"], "a;b", 1.5),
    (2, 10, ["c"], "100%", 2.5),
    (3, 20, ["d", "e", "f"], "it's", 3.0),
    (4, 20, [], "back\\slash", 4.0),
    (5, 30, ["g"], "x -- y", 5.0),
]


def sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.fixture(scope="module")
def tables(hive: HiveInfo) -> None:
    hive_query(f"CREATE DATABASE IF NOT EXISTS {DB}")
    hive_query(f"DROP TABLE IF EXISTS {DB}.events")
    hive_query(
        f"CREATE TABLE {DB}.events (id BIGINT, user_id BIGINT, tags ARRAY<STRING>, s STRING, amount DOUBLE) "
        "USING parquet"
    )
    rows = ", ".join(
        f"({i}, {u}, CAST(array({', '.join(sql_literal(t) for t in tags)}) AS ARRAY<STRING>), {sql_literal(s)}, {a})"
        for i, u, tags, s, a in EVENTS
    )
    hive_query(f"INSERT INTO {DB}.events VALUES {rows}")
    hive_query(f"CREATE TABLE IF NOT EXISTS {SENTINEL} (x INT) USING parquet")
    hive_query(f"INSERT OVERWRITE TABLE {SENTINEL} VALUES (42)")
    hive_query(f"DROP TABLE IF EXISTS {DB}.foreign_table")
    hive_query(f"CREATE TABLE {DB}.foreign_table (id BIGINT, score DOUBLE) USING parquet")
    hive_query(f"INSERT INTO {DB}.foreign_table VALUES (7, 0.7), (8, 0.8)")


def sentinel_intact() -> bool:
    return hive_query(f"SELECT x FROM {SENTINEL}") == [(42,)]


@pytest.fixture(scope="module")
def foreign_host() -> Iterator[socket.socket]:
    """A listener on 127.0.0.2 standing for a host outside the allowlist."""
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.listen(16)
    yield sock
    sock.close()


def connections(sock: socket.socket) -> int:
    """How many connections reached the listener since the last call."""
    count = 0
    while select.select([sock], [], [], 0)[0]:
        conn, _ = sock.accept()
        conn.close()
        count += 1
    return count


@pytest.fixture(scope="module")
def api(security_api: ApiServer) -> ApiServer:
    """The real API server shared by tests/security (stack.py), configured as a deployment
    would be: one output database (DB), one allowed webhdfs origin (127.0.0.1), hdfs paths
    under /data or the test root only."""
    return security_api


@pytest.fixture
def cfg(make_config: Callable[..., WorkflowConfig], hive: HiveInfo, tmp_path: Path) -> WorkflowConfig:
    return make_config(
        hive=hive_config(hive, DB),
        hdfs={"allowed_urls": [ALLOWED_URL], "allowed_path_prefixes": [ALLOWED_PREFIX, str(tmp_path)]},
    )


def fill(template: str, marker: Path, port: int, warehouse: str) -> str:
    return (
        template.replace("{marker}", str(marker))
        .replace("{port}", str(port))
        .replace("{warehouse}", warehouse)
    )


def body(tmp: Path, **fields: str) -> dict[str, str]:
    return {
        "name": "security",
        "experiment_id": "exp_001",
        "sample_sql": f"SELECT * FROM {DB}.events",
        "infer_sql": f"SELECT id, s FROM {DB}.events",
        "hdfs_path": str(tmp / "hdfs"),
        "hive_table": f"{DB}.predictions",
        **fields,
    }


CASES: list[tuple[str, str, str]] = [  # (field, label, template)
    *[(field, label, sql) for label, sql in HOSTILE_SQL for field in ("sample_sql", "infer_sql")],
    *[("hdfs_path", label, value) for label, value in HOSTILE_PATHS],
    *[("hive_table", label, value) for label, value in HOSTILE_TABLES],
]
CASE_IDS = [f"{field}-{label}" for field, label, _ in CASES]


# The tests that send the hostile cases, by the kind named in their cases' tags.
KINDS = {
    "api": "test_hostile_input_is_refused_by_the_api",
    "stage": "test_hostile_input_is_refused_by_the_stage_recheck",
}
TAG_RE = re.compile(rf"{MARK}_({'|'.join(KINDS)})(\d{{3}})")


def tag(kind: str, case: tuple[str, str, str]) -> str:
    """The marker the case sends when `kind`'s test runs it: MARK_api007, MARK_stage007, ..."""
    return f"{MARK}_{kind}{CASES.index(case):03d}"


def tagged_case(statement: str) -> list[str]:
    """The test cases whose tags are in a statement the server received."""
    return sorted({f"{KINDS[kind]}[{CASE_IDS[int(n)]}]" for kind, n in TAG_RE.findall(statement)})


def hostile(
    case: tuple[str, str, str], kind: str, hive: HiveInfo, marker: Path, foreign: socket.socket
) -> tuple[str, str]:
    field, _, template = case
    template = template.replace(MARK, tag(kind, case))
    return field, fill(template, marker, foreign.getsockname()[1], str(Path(hive.dir) / "warehouse"))


def assert_nothing_happened_here(marker: Path, foreign: socket.socket) -> None:
    """What a hostile case decides itself; the Hive server is asked once, after all of them
    (test_no_hostile_statement_reached_the_server)."""
    assert not marker.exists(), "a command ran on the worker"
    assert connections(foreign) == 0, "a request reached the host outside the allowlist"


# The statements the Thrift Server logs (as tests/services/hive.py's submitted_queries reads them).
SUBMITTED_RE = re.compile(r"Submitting query '(.*?)' with [0-9a-f-]{36}", re.DOTALL)


def submitted_in(log: bytes) -> list[str]:
    return SUBMITTED_RE.findall(log.decode(errors="replace"))


class ServerLogSpans:
    """The hostile cases run so far, each with the span of the Thrift Server's log (byte
    offsets) written while it ran. The log is only appended to, so the spans stay valid."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.spans: list[tuple[str, int, int]] = []  # (test, start, end)
        self.checked = 0  # how many spans problems() has looked at

    @contextmanager
    def case(self, name: str) -> Iterator[None]:
        start = self.log.stat().st_size
        try:
            yield
        finally:
            self.spans.append((name, start, self.log.stat().st_size))

    def problems(self) -> list[str]:
        """Everything the Hive server shows of the hostile cases, each naming its case."""
        self.checked = len(self.spans)
        found = []
        if not sentinel_intact():
            found.append(f"the sentinel table {SENTINEL} was dropped or overwritten")
        log = self.log.read_bytes()
        for name, start, end in self.spans:
            if sent := submitted_in(log[start:end]):
                found.append(f"{name}: the server received {sent} while it ran")
        for statement in submitted_in(log):
            if MARK in statement:
                cases = ", ".join(tagged_case(statement)) or "(a statement with no case tag)"
                found.append(f"{cases}: the server received {statement!r}")
        return found


@pytest.fixture(scope="module")
def hostile_runs(hive_server: HiveServer, tables: None) -> Iterator[ServerLogSpans]:
    """Where the hostile cases record their spans of the server log. Checked by
    test_no_hostile_statement_reached_the_server after them, or here at the module's end when
    that test was not selected."""
    runs = ServerLogSpans(hive_server.dir / "server.log")
    yield runs
    if len(runs.spans) > runs.checked:
        problems = runs.problems()
        assert not problems, "\n".join(problems)


def test_there_are_enough_hostile_inputs() -> None:
    assert len({template for _, _, template in CASES}) >= 25


def test_the_foreign_listener_sees_a_connection(foreign_host: socket.socket) -> None:
    """The detector itself: a connection to 127.0.0.2 is counted."""
    connections(foreign_host)
    with socket.create_connection(foreign_host.getsockname(), timeout=10):
        pass
    assert connections(foreign_host) == 1


def test_the_attacks_work_when_beeline_gets_the_text_unchecked(
    cfg: WorkflowConfig, tables: None, hive_server: HiveServer, tmp_path: Path
) -> None:
    """Control: a `#` line hiding a quote, and a `!sh` line, do drop a table and run a command
    through real beeline when the text reaches it as written; the tests below refuse them.
    The server's log shows the DROP in the span written while beeline ran, as the spans the
    hostile cases record would show theirs."""
    from airflow.providers.apache.hive.hooks.hive import HiveCliHook

    marker = tmp_path / "control_marker"
    hive_query(f"CREATE TABLE IF NOT EXISTS {DB}.control_victim (x INT) USING parquet")
    hql = f"SELECT 1 AS a\n#';\n;DROP TABLE {DB}.control_victim;--'\nSELECT 2 AS b;\n!sh touch {marker}\n"
    log = hive_server.dir / "server.log"
    start = log.stat().st_size
    HiveCliHook(hive_cli_conn_id=cfg.hive.cli_conn_id).run_cli(hql)
    sent = submitted_in(log.read_bytes()[start:])
    assert marker.exists(), "beeline's !sh ran nothing: the marker check below could not fail"
    assert not hive_query(f"SHOW TABLES IN {DB} LIKE 'control_victim'"), "the # line did not hide a DROP"
    assert any("DROP TABLE" in q.upper() and "control_victim" in q for q in sent), sent


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_hostile_input_is_refused_by_the_api(
    api: ApiServer,
    hive: HiveInfo,
    hostile_runs: ServerLogSpans,
    foreign_host: socket.socket,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    case: tuple[str, str, str],
) -> None:
    marker = tmp_path / "marker"
    field, value = hostile(case, "api", hive, marker, foreign_host)
    with hostile_runs.case(request.node.name):
        before = newest_task_id(api.store)
        status, error = call(api, "POST", "/tasks", body(tmp_path, **{field: value}))
        assert status == 422, error
        assert {d["loc"][-1] for d in error["detail"]} == {field}, error  # that field, and only that one
        assert newest_task_id(api.store) == before, "a rejected body created a task"
        assert_nothing_happened_here(marker, foreign_host)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_hostile_input_is_refused_by_the_stage_recheck(
    cfg: WorkflowConfig,
    hive: HiveInfo,
    hostile_runs: ServerLogSpans,
    foreign_host: socket.socket,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    case: tuple[str, str, str],
) -> None:
    """A task row the API never saw (written straight into the store): every Hive and HDFS
    stage refuses it before beeline or fsspec starts."""
    from airflow.sdk.exceptions import AirflowFailException

    marker = tmp_path / "marker"
    field, value = hostile(case, "stage", hive, marker, foreign_host)
    with hostile_runs.case(request.node.name):
        store = get_store(cfg.store.url)
        task_id = new_task(store, server="local", **body(tmp_path, **{field: value}))
        write_predictions(tmp_path, task_id)
        for operator, stage in (
            (HiveExportOperator, "data_fetch"),
            (HdfsDownloadOperator, "data_fetch"),
            (HdfsUploadOperator, "hive_upload"),
            (HiveLoadOperator, "hive_upload"),
        ):
            with pytest.raises(AirflowFailException, match=field):
                operator(task_id=operator.__name__).execute(context(task_id))
            failed = step(store, task_id, stage)
            assert failed["status"] == StepStatus.FAILED and failed["error_message"].startswith(f"{field}: ")
        started = any("running HiveQL" in e["message"] for e in store.logs_after(task_id))
        assert not started, "beeline was started"
        assert_nothing_happened_here(marker, foreign_host)


def test_no_hostile_statement_reached_the_server(hostile_runs: ServerLogSpans) -> None:
    """Once, after every hostile case above (each checked what it decides itself): the
    sentinel table keeps its row, the server received no statement while a case ran, and no
    hostile statement is in its log. A failure names the case(s) it comes from."""
    problems = hostile_runs.problems()
    assert not problems, "\n".join(problems)


def write_predictions(tmp_path: Path, task_id: int) -> Path:
    """What result_download leaves on HDFS for hive_upload (body()'s hdfs_path)."""
    local = Path(paths.hdfs_results(str(tmp_path / "hdfs"), task_id))
    local.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "score": [0.1, 0.2]}), local)
    return local


def test_an_existing_table_we_did_not_create_is_never_loaded_into(
    cfg: WorkflowConfig, tables: None, hive_server: HiveServer, tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", **body(tmp_path, hive_table=f"{DB}.foreign_table"))
    write_predictions(tmp_path, task_id)
    HdfsUploadOperator(task_id="hdfs_upload").execute(context(task_id))
    with pytest.raises(AirflowFailException, match="not created by fuxictr-workflow"):
        HiveLoadOperator(task_id="hive_load").execute(context(task_id))
    assert step(store, task_id, "hive_upload")["error_message"].startswith("hive_table: ")
    assert sorted(hive_query(f"SELECT id, score FROM {DB}.foreign_table")) == [(7, 0.7), (8, 0.8)]
    assert not any("running HiveQL" in e["message"] for e in store.logs_after(task_id)), "beeline was started"
    assert not [q for q in submitted_queries(hive_server) if "foreign_table" in q and "LOAD" in q.upper()]


@pytest.mark.parametrize(("label", "sql", "rows"), LEGIT_SQL, ids=[label for label, _, _ in LEGIT_SQL])
def test_legitimate_sql_passes_the_api(
    api: ApiServer, tmp_path: Path, label: str, sql: str, rows: int
) -> None:
    status, created = call(api, "POST", "/tasks", body(tmp_path, sample_sql=sql, infer_sql=sql))
    assert status == 201, created
    task = api.store.get_task(created["task_id"], with_steps=False)
    assert task["sample_sql"] == sql.strip().rstrip(";").rstrip()  # stored as written


def test_legitimate_sql_runs_on_the_server(cfg: WorkflowConfig, tables: None, tmp_path: Path) -> None:
    """All of them in one beeline call through the export template, as the stage renders it."""
    from airflow.providers.apache.hive.hooks.hive import HiveCliHook

    dialect = cfg.hive.sql_dialect
    datasets = [
        {"directory": str(tmp_path / f"q{i}"), "sql": render_select("sample_sql", sql, dialect)}
        for i, (_, sql, _) in enumerate(LEGIT_SQL)
    ]
    hql = render("export.hql", datasets=datasets, session_settings=session_settings(dialect))
    HiveCliHook(hive_cli_conn_id=cfg.hive.cli_conn_id).run_cli(hql)
    got = {label: ds.dataset(tmp_path / f"q{i}").count_rows() for i, (label, _, _) in enumerate(LEGIT_SQL)}
    assert got == {label: rows for label, _, rows in LEGIT_SQL}


def test_attack_text_inside_strings_stays_data(
    cfg: WorkflowConfig, tables: None, hive_server: HiveServer, tmp_path: Path
) -> None:
    """Strings holding what beeline would act on (a `!sh` line, a `#` line, `\\'` that fools its
    comment stripper, `;DROP ...;`) are accepted, run through the real stage, and come back
    unchanged as data; nothing runs."""
    marker = tmp_path / "marker"
    values = {
        "x": "a\\",
        "y": "--",
        "z": f";DROP TABLE {SENTINEL};",
        "w": f"line\n!sh touch {marker}\n# ; DROP TABLE {SENTINEL}\n",
        # sent as DECODE(UNHEX(..)): line/paragraph separators, NEL, a bidi override, a BOM
        "u": "a\u2028b\u2029c\x85d\u202ee\ufefff é",
    }
    sample = "SELECT " + ", ".join(f"{sql_literal(v)} AS {k}" for k, v in values.items())
    infer = f"SELECT id, ';DROP TABLE {SENTINEL}; SELECT ' AS q FROM {DB}.events -- trailing"
    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", **body(tmp_path, sample_sql=sample, infer_sql=infer))
    HiveExportOperator(task_id="hive_export").execute(context(task_id))
    HdfsDownloadOperator(task_id="hdfs_download").execute(context(task_id))
    assert step(store, task_id, "data_fetch")["status"] == StepStatus.COMPLETED
    got = pq.read_table(paths.staging_dataset_dir(cfg.storage.staging_dir, task_id, "sample")).to_pylist()
    assert got == [values]
    infer_rows = pq.read_table(
        paths.staging_dataset_dir(cfg.storage.staging_dir, task_id, "infer")
    ).to_pylist()
    assert len(infer_rows) == len(EVENTS) and {r["q"] for r in infer_rows} == {
        f";DROP TABLE {SENTINEL}; SELECT "
    }
    assert not marker.exists() and sentinel_intact()
    hql = next(e["message"] for e in store.logs_after(task_id) if "running HiveQL" in e["message"])
    statements = [line for line in hql.splitlines()[1:] if line and not line.startswith("--")]
    settings = [f"{s};" for s in session_settings(cfg.hive.sql_dialect)]
    assert statements[: len(settings)] == settings  # before any user query
    assert len(statements) == len(settings) + 2 and all(
        line.startswith("INSERT OVERWRITE DIRECTORY") for line in statements[len(settings) :]
    )


def test_variable_substitution_is_off_before_the_query(
    cfg: WorkflowConfig, tables: None, tmp_path: Path
) -> None:
    """The statement the export starts with stops `${env:HOME}` expanding on the real server.

    Our own text (users can not send `${`): without the statement the server expands it,
    after it the value stays literal."""
    from airflow.providers.apache.hive.hooks.hive import HiveCliHook

    query = "SELECT '${env:HOME}' AS v"
    hql = (
        f"INSERT OVERWRITE DIRECTORY '{tmp_path / 'before'}' STORED AS PARQUET {query};\n"
        f"{substitution_off(cfg.hive.sql_dialect)};\n"
        f"INSERT OVERWRITE DIRECTORY '{tmp_path / 'after'}' STORED AS PARQUET {query};\n"
    )
    HiveCliHook(hive_cli_conn_id=cfg.hive.cli_conn_id).run_cli(hql)
    assert ds.dataset(tmp_path / "before").to_table().to_pylist() != [{"v": "${env:HOME}"}]  # it did expand
    assert ds.dataset(tmp_path / "after").to_table().to_pylist() == [{"v": "${env:HOME}"}]


def test_the_spark_thrift_server_refuses_sql_on_files(hive_server: HiveServer, tables: None) -> None:
    """On the real server, through PyHive, in one session: `SELECT value FROM text.conf` reads the
    server's conf/hive-site.xml when SQL on files is on (the control: the attack works), and is
    refused by the embedded server's default and after the export's session settings."""
    from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook

    attack = "SELECT value FROM text.conf"
    conn = HiveServer2Hook().get_conn()
    try:
        cursor = conn.cursor()
        with pytest.raises(Exception, match="(?i)not found|cannot be found"):  # the server's default
            cursor.execute(attack)
        cursor.execute("SET spark.sql.runSQLOnFiles=true")
        cursor.execute(attack)
        lines = [row[0] for row in cursor.fetchall()]
        assert any("hive.server2" in line for line in lines), lines[:5]  # it did read the file
        for statement in session_settings("spark"):
            cursor.execute(statement)
        with pytest.raises(Exception, match="(?i)not found|cannot be found"):
            cursor.execute(attack)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "column", ["score_x; DROP TABLE " + SENTINEL, "score_a`\n;DROP TABLE " + SENTINEL, "score_\u2028x"]
)
def test_prediction_columns_from_the_server_are_checked_before_hive(
    cfg: WorkflowConfig,
    hive: HiveInfo,
    hostile_runs: ServerLogSpans,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    column: str,
) -> None:
    """A score column name in the predictions file (written by the training server) that is
    not a plain name fails hive_upload before beeline starts; nothing reaches Hive."""
    from airflow.sdk.exceptions import AirflowFailException

    with hostile_runs.case(request.node.name):
        store = get_store(cfg.store.url)
        task_id = new_task(store, server="local", **body(tmp_path))
        local = Path(paths.hdfs_results(str(tmp_path / "hdfs"), task_id))
        local.parent.mkdir(parents=True)
        pq.write_table(pa.table({"id": pa.array([1], pa.int64()), column: [0.5]}), local)
        HdfsUploadOperator(task_id="hdfs_upload").execute(context(task_id))
        with pytest.raises(AirflowFailException, match="cannot be Hive columns"):
            HiveLoadOperator(task_id="hive_load").execute(context(task_id))
        assert step(store, task_id, "hive_upload")["status"] == StepStatus.FAILED
        assert not any("running HiveQL" in e["message"] for e in store.logs_after(task_id)), (
            "beeline was started"
        )
