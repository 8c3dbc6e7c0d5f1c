"""The embedded HiveServer2: the Spark Thrift Server from the pyspark wheel on 127.0.0.1.

Derby metastore and warehouse live under our data dir; auth mode NONE is set in its
hive-site.xml (SASL PLAIN with any user: what beeline and PyHive speak by default).

    scripts/hive-server start|stop|status [--dir DIR] [--port N]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

if not __package__:  # run as a script: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import processes, service_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / ".work" / "hive"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class HiveInfo:
    host: str
    port: int
    pid: int
    dir: str
    # the pid's start time: with it a zombie or a reused pid is never taken for our server
    start_ticks: int = 0

    @property
    def process(self) -> processes.ProcessRef:
        return processes.ProcessRef(self.pid, self.start_ticks)


HIVE_SITE = """<?xml version="1.0"?>
<configuration>
  <property><name>hive.server2.authentication</name><value>NONE</value></property>
  <property><name>hive.server2.thrift.bind.host</name><value>127.0.0.1</value></property>
  <property><name>hive.server2.thrift.port</name><value>{port}</value></property>
  <property><name>hive.server2.enable.doAs</name><value>false</value></property>
  <property><name>javax.jdo.option.ConnectionURL</name>
            <value>jdbc:derby:;databaseName={dir}/metastore_db;create=true</value></property>
  <property><name>hive.metastore.warehouse.dir</name><value>{dir}/warehouse</value></property>
  <property><name>hive.metastore.schema.verification</name><value>false</value></property>
</configuration>
"""


CLIENT_JVM_OPTS = "-XX:TieredStopAtLevel=1"


class HiveServer:
    """Start/stop one Spark Thrift Server whose state lives under `directory`."""

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_DIR, port: int | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.port = port
        self.info_file = self.dir / "hive.json"

    def read_info(self) -> HiveInfo | None:
        return HiveInfo(**json.loads(self.info_file.read_text())) if self.info_file.exists() else None

    def running(self) -> HiveInfo | None:
        info = self.read_info()
        return info if info is not None and info.process.running() else None

    def serving(self) -> bool:
        """Running and accepting connections on its Thrift port."""
        info = self.running()
        return info is not None and _listening(info.port)

    def env(self) -> dict[str, str]:
        home = spark_home()
        return {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_CONF_DIR": str(self.dir / "conf"),
            "HIVE_CONF_DIR": str(self.dir / "conf"),
            "SPARK_LOCAL_IP": "127.0.0.1",
        }

    # A JVM start is CPU-bound: on a small machine busy with a training and Airflow beside it
    # the server can take minutes to listen, hence the long default timeout.
    def start(self, timeout: float = 600.0) -> HiveInfo:
        current = self.running()
        if current is not None:
            return current
        self.stop()  # a server that exited may leave its group (the JVM) or a zombie behind
        previous = self.read_info()
        port = self.port or (previous.port if previous else None) or free_port()
        (self.dir / "conf").mkdir(parents=True, exist_ok=True)
        (self.dir / "conf" / "hive-site.xml").write_text(HIVE_SITE.format(port=port, dir=self.dir))
        log_path = self.dir / "server.log"
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the daemon
        cmd = [
            str(spark_home() / "bin" / "spark-submit"),
            "--class",
            "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2",
            "--master",
            "local[2]",
            "--driver-memory",
            "1g",
            "--conf",
            "spark.sql.shuffle.partitions=2",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            # no `SELECT ... FROM text.conf` / parquet.`/path`: a query reads tables only (the
            # export also sets it per session, for servers that are not started here)
            "spark.sql.runSQLOnFiles=false",
            "--conf",
            f"spark.sql.warehouse.dir={self.dir / 'warehouse'}",
            "--conf",
            # C1 only: the server's queries are small, and without the C2 compiler a start
            # needs half the CPU time, which is what a busy machine lacks
            f"spark.driver.extraJavaOptions=-Dderby.system.home={self.dir} -XX:TieredStopAtLevel=1",
            "--hiveconf",
            f"hive.server2.thrift.port={port}",
            "--hiveconf",
            "hive.server2.thrift.bind.host=127.0.0.1",
            "spark-internal",
        ]
        proc = subprocess.Popen(
            cmd, cwd=self.dir, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        info = HiveInfo(
            "127.0.0.1", port, proc.pid, str(self.dir), processes.ProcessRef.of(proc.pid).start_ticks
        )
        self.info_file.write_text(json.dumps(asdict(info)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the Hive server exited with {proc.returncode}:\n{self._tail(log_path)}")
            if _listening(port):
                return info
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"the Hive server did not listen on 127.0.0.1:{port} in {timeout:.0f}s:\n{self._tail(log_path)}"
        )

    @staticmethod
    def _tail(path: Path) -> str:
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        info = self.read_info()
        if info is not None:
            info.process.stop(timeout=timeout)

    def airflow_env(self) -> dict[str, str]:
        """AIRFLOW_CONN_* for beeline (HiveOperator) and HiveServer2Hook, plus beeline on PATH."""
        info = self.running() or self.read_info()
        assert info is not None, "start the Hive server first"
        beeline_extra = quote(json.dumps({"use_beeline": True}))
        return {
            "AIRFLOW_CONN_HIVE_CLI_DEFAULT": f"hive-cli://hive@127.0.0.1:{info.port}/default?__extra__={beeline_extra}",
            "AIRFLOW_CONN_HIVESERVER2_DEFAULT": f"hiveserver2://hive@127.0.0.1:{info.port}/default",
            "SPARK_HOME": str(spark_home()),
            "PATH": f"{spark_home() / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            # beeline runs as two short JVMs (Spark's launcher, then beeline itself), one per
            # HiveQL stage: with the C1 compiler only, each start takes about half the CPU time
            "SPARK_LAUNCHER_OPTS": CLIENT_JVM_OPTS,
            "SPARK_BEELINE_OPTS": CLIENT_JVM_OPTS,
        }


def main(argv: list[str] | None = None) -> int:
    return service_cli.run(argv, __doc__, HiveServer, dir_default=str(DEFAULT_DIR))


if __name__ == "__main__":
    sys.exit(main())
