"""Side-by-side SSH transfer speeds: our engine vs. OpenSSH scp vs. Airflow's SFTP path.

    python -m benchmarks.transfer --size-mib 1024 [--repeats 3]

Starts its own sshd on 127.0.0.1 (scripts/sshd.py), writes one random file and moves it
with every method, alternating methods within each repeat so that load from other
processes hits all of them alike. Wall time includes connecting. The last line printed is
one JSON object: per-method median MB/s (`<method>_mb_s`), the runs, and the ratios
`ours_vs_scp_upload`, `ours_vs_scp_download`, `ours_vs_sftp_hook_upload`,
`ours_vs_sftp_hook_download` (ratios of medians).

`scp` runs with OpenSSH's default cipher (the fair comparison; which one the server
picked is printed as `scp_cipher`); `scp_gcm` (not run unless named in --methods) forces
aes128-gcm, the cipher ours prefers, and is only reported, not used in the ratios.
`scp_gcm_hashed_*` (also only on request) is a bound, not a product: scp with aes128-gcm
while two threads sha256 the source and the copy's bytes (the work verification adds),
all at once; it shows what any design that hashes both sides can reach on this machine.

`sftp_hook` is the Airflow SSH provider's SSHHook (paramiko) with ``open_sftp().put/get``:
exactly what the SFTP provider's SFTPHook.store_file/retrieve_file run (that provider is
not a dependency of this project). Ours runs with verify_checksum on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO))

from fuxictr_workflow.domain.config import TransferConfig  # noqa: E402
from fuxictr_workflow.ssh.servers import Endpoint  # noqa: E402
from fuxictr_workflow.ssh.ssh_access import SSHAccess  # noqa: E402
from fuxictr_workflow.store import WorkflowStore  # noqa: E402
from fuxictr_workflow.transfer import TransferItem, download, upload  # noqa: E402
from fuxictr_workflow.transfer.sessions import stream_count  # noqa: E402
from scripts.sshd import LocalSshd, SshdInfo  # noqa: E402

MB = 1_000_000
METHODS = (
    "ours_upload",
    "scp_upload",
    "sftp_hook_upload",
    "ours_download",
    "scp_download",
    "sftp_hook_download",
)
EXTRA_METHODS = ("scp_gcm_upload", "scp_gcm_download", "scp_gcm_hashed_upload", "scp_gcm_hashed_download")


def write_random(path: Path, size: int) -> None:
    block = 1 << 20
    with path.open("wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest()


class Bench:
    def __init__(self, info: SshdInfo, work: Path, cfg: TransferConfig, streams: int | None) -> None:
        self.info = info
        self.streams = streams
        self.work = work
        self.cfg = cfg
        self.local = work / "staging"
        self.remote = work / "remote"
        self.local.mkdir()
        self.remote.mkdir()
        self.src_local = self.local / "source.bin"
        self.src_remote = self.remote / "source.bin"
        self.store = WorkflowStore(f"sqlite:///{work / 'bench.db'}", create=True)
        os.environ["AIRFLOW_CONN_BENCH_SSH"] = json.dumps(
            {
                "conn_type": "ssh",
                "host": info.host,
                "port": info.port,
                "login": info.username,
                "extra": info.connection_extra(),
            }
        )
        from airflow.sdk import BaseHook

        self.endpoint = Endpoint(
            name="bench",
            ssh=SSHAccess("bench", BaseHook.get_connection("bench_ssh")),
            remote_root=str(self.remote),
            python=sys.executable,
        )

    def _task(self) -> int:
        """A fresh workflow task per run, so nothing is skipped as already verified."""
        return self.store.create_task(
            name="bench",
            experiment_id="bench",
            sample_sql="-",
            infer_sql="-",
            hdfs_path=None,
            hive_table=None,
        )

    def ours_upload(self, dest: Path) -> None:
        upload(
            self.endpoint,
            [TransferItem(str(self.src_local), str(dest))],
            cfg=self.cfg,
            store=self.store,
            task_id=self._task(),
            step="data_upload",
            local_root=str(self.local),
            streams=self.streams,
        )

    def ours_download(self, dest: Path) -> None:
        download(
            self.endpoint,
            [TransferItem(str(self.src_remote), str(dest))],
            cfg=self.cfg,
            store=self.store,
            task_id=self._task(),
            step="result_download",
            local_root=str(self.local),
            streams=self.streams,
        )

    def _scp(self, src: str, dst: str, *options: str) -> None:
        opts = self.endpoint.openssh_options()
        subprocess.run(["scp", "-q", *opts, *options, "-P", str(self.info.port), src, dst], check=True)

    def scp_upload(self, dest: Path, *options: str) -> None:
        self._scp(str(self.src_local), f"{self.info.username}@{self.info.host}:{dest}", *options)

    def scp_download(self, dest: Path, *options: str) -> None:
        self._scp(f"{self.info.username}@{self.info.host}:{self.src_remote}", str(dest), *options)

    def scp_gcm_upload(self, dest: Path) -> None:
        self.scp_upload(dest, "-c", "aes128-gcm@openssh.com")

    def scp_gcm_download(self, dest: Path) -> None:
        self.scp_download(dest, "-c", "aes128-gcm@openssh.com")

    def _hashed(self, copy: Callable[[Path], None], src: Path, dest: Path) -> None:
        """Run `copy` while the source is hashed twice alongside (both sides' sha256 work);
        page-cache reads stand in for the copy's own bytes, which are not on disk yet."""
        with ThreadPoolExecutor(2) as pool:
            hashes = [pool.submit(sha256, src) for _ in range(2)]
            copy(dest)
            for h in hashes:
                h.result()

    def scp_gcm_hashed_upload(self, dest: Path) -> None:
        self._hashed(self.scp_gcm_upload, self.src_local, dest)

    def scp_gcm_hashed_download(self, dest: Path) -> None:
        self._hashed(self.scp_gcm_download, self.src_remote, dest)

    def scp_cipher(self) -> str:
        """The cipher OpenSSH negotiates with its defaults (what plain scp uses)."""
        out = subprocess.run(
            [
                "ssh",
                "-v",
                *self.endpoint.openssh_options(),
                "-p",
                str(self.info.port),
                "-l",
                self.info.username,
                self.info.host,
                "exit",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stderr
        found = [
            line.split("cipher:")[1].split()[0]
            for line in out.splitlines()
            if "client->server cipher:" in line
        ]
        return found[0] if found else "unknown"

    def _sftp(self, action: Callable[..., object], src: Path, dst: Path) -> None:
        from airflow.providers.ssh.hooks.ssh import SSHHook

        client = SSHHook(ssh_conn_id="bench_ssh").get_conn()
        try:
            sftp = client.open_sftp()
            getattr(sftp, action)(str(src), str(dst))  # type: ignore[arg-type]
            sftp.close()
        finally:
            client.close()

    def sftp_hook_upload(self, dest: Path) -> None:
        self._sftp("put", self.src_local, dest)  # type: ignore[arg-type]

    def sftp_hook_download(self, dest: Path) -> None:
        self._sftp("get", self.src_remote, dest)  # type: ignore[arg-type]

    def run(self, method: str, size: int, expect: str) -> float:
        upload_ = method.endswith("_upload")
        dest = (self.remote if upload_ else self.local) / f"{method}.bin"
        started = time.monotonic()
        getattr(self, method)(dest)
        seconds = time.monotonic() - started
        if dest.stat().st_size != size or sha256(dest) != expect:
            raise SystemExit(f"{method}: the copy differs from the source")
        dest.unlink()
        return size / MB / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=TransferConfig().chunk_size)
    parser.add_argument("--workers", type=int, default=TransferConfig().parallel_workers)
    parser.add_argument(
        "--streams",
        type=int,
        help="parallel sessions for ours (default: engine's choice, 1 on 2-CPU loopback)",
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated; also {', '.join(EXTRA_METHODS)}"
    )
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    cfg = TransferConfig(chunk_size=args.chunk_size, parallel_workers=args.workers, verify_checksum=True)
    work = Path(args.dir or tempfile.mkdtemp(prefix="transfer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sshd = LocalSshd(work / "sshd")
    info = sshd.start()
    try:
        bench = Bench(info, work, cfg, args.streams)
        cipher = bench.scp_cipher()
        size = args.size_mib << 20
        write_random(bench.src_local, size)
        shutil.copyfile(bench.src_local, bench.src_remote)
        expect = sha256(bench.src_local)
        runs: dict[str, list[float]] = {m: [] for m in methods}
        for repeat in range(args.repeats):
            for method in methods:
                rate = bench.run(method, size, expect)
                runs[method].append(round(rate, 1))
                print(f"repeat {repeat + 1}: {method:20s} {rate:8.1f} MB/s", flush=True)
        bench.store.dispose()
    finally:
        sshd.stop()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    medians = {m: round(statistics.median(v), 1) for m, v in runs.items()}
    result: dict[str, object] = {
        "size_mib": args.size_mib,
        "repeats": args.repeats,
        "chunk_size": cfg.chunk_size,
        "parallel_workers": cfg.parallel_workers,
        "streams": args.streams or stream_count(cfg.parallel_workers, info.host),
        "scp_cipher": cipher,
        "verify_checksum": cfg.verify_checksum,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    result.update({f"{m}_mb_s": v for m, v in medians.items()})
    for direction in ("upload", "download"):
        for other in ("scp", "sftp_hook", "scp_gcm", "scp_gcm_hashed"):
            ours, theirs = medians.get(f"ours_{direction}"), medians.get(f"{other}_{direction}")
            if ours and theirs:
                result[f"ours_vs_{other}_{direction}"] = round(ours / theirs, 2)
    result["runs_mb_s"] = runs
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
