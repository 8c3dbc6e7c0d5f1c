"""The transfer engine against a real OpenSSH sshd on 127.0.0.1: round trips, faults, resume."""

from __future__ import annotations

import dataclasses
import glob
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fuxictr_workflow.domain.stages import ChunkStatus
from fuxictr_workflow.store import ChunkSpec, WorkflowStore
from fuxictr_workflow.transfer import (
    Progress,
    TransferError,
    TransferHooks,
    TransferItem,
    UnsafePath,
    channel,
    chunk_id,
    download,
    upload,
)
from fuxictr_workflow.transfer.sessions import stream_count
from scripts.sshd import LocalSshd, SshdInfo
from tests.conftest import new_task
from tests.transfer_helpers import (
    CHUNK,
    ListLog,
    flip_byte,
    make_endpoint,
    sha256,
    transfer_config,
    tree_hashes,
    unreachable_endpoint,
    write_random,
)

pytestmark = pytest.mark.timeout(60)


@dataclass
class Env:
    staging: Path
    remote: Path
    sshd: SshdInfo
    store: WorkflowStore
    task_id: int
    log: ListLog

    @property
    def endpoint(self) -> Any:
        return make_endpoint(self.sshd, self.remote)

    def kwargs(self, step: str, **cfg: Any) -> dict[str, Any]:
        config = transfer_config(**cfg)
        return {
            "cfg": config,
            "streams": config.parallel_workers,  # parallel even on loopback: the tests cover it
            "store": self.store,
            "task_id": self.task_id,
            "step": step,
            "local_root": str(self.staging),
            "log": self.log,
        }

    def up(self, src: Path, dst: Path, *, endpoint: Any = None, **kw: Any) -> Any:
        extra = {k: kw.pop(k) for k in ("hooks", "progress", "transport", "pipeline_depth") if k in kw}
        return upload(
            endpoint or self.endpoint,
            [TransferItem(str(src), str(dst))],
            **self.kwargs("data_upload", **kw),
            **extra,
        )

    def down(self, src: Path, dst: Path, *, endpoint: Any = None, **kw: Any) -> Any:
        extra = {k: kw.pop(k) for k in ("hooks", "progress", "transport", "pipeline_depth") if k in kw}
        return download(
            endpoint or self.endpoint,
            [TransferItem(str(src), str(dst))],
            **self.kwargs("result_download", **kw),
            **extra,
        )

    def chunks(self, step: str) -> list[dict[str, Any]]:
        return self.store.chunks(self.task_id, step)


@pytest.fixture
def env(tmp_path: Path, sshd: SshdInfo, store: WorkflowStore) -> Env:
    staging, remote = tmp_path / "staging", tmp_path / "remote"
    staging.mkdir()
    remote.mkdir()
    return Env(staging, remote, sshd, store, new_task(store), ListLog())


SIZES = {
    "empty": 0,
    "one_byte": 1,
    "chunk_minus_1": CHUNK - 1,
    "chunk": CHUNK,
    "chunk_plus_1": CHUNK + 1,
    "7.5_chunks": CHUNK * 15 // 2,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_round_trip_file(env: Env, size: int) -> None:
    src = write_random(env.staging / "in" / "data.bin", size)
    remote = env.remote / "task_1" / "data.bin"
    back = env.staging / "out" / "data.bin"

    up = env.up(src, remote)
    down = env.down(remote, back)

    assert sha256(remote) == sha256(back) == sha256(src)
    assert not Path(f"{remote}.part").exists() and not Path(f"{back}.part").exists()
    expected_chunks = max(1, -(-size // CHUNK))
    assert up.chunks_total == up.chunks_sent == down.chunks_sent == expected_chunks
    assert up.bytes == down.bytes == size
    for step in ("data_upload", "result_download"):
        rows = env.chunks(step)
        assert len(rows) == expected_chunks
        assert {r["status"] for r in rows} == {ChunkStatus.VERIFIED}
        assert all(r["send_count"] == 1 and r["retry_count"] == 0 and len(r["checksum"]) == 64 for r in rows)


def test_round_trip_directory_of_five_files(env: Env) -> None:
    src = env.staging / "sample"
    for i, size in enumerate([0, 10, CHUNK, 3 * CHUNK + 7, 200_000]):
        write_random(src / ("nested" if i == 4 else "") / f"part-{i:05d}.parquet", size, seed=i)
    remote = env.remote / "task_1" / "data" / "sample"
    back = env.staging / "back" / "sample"

    up = env.up(src, remote)
    down = env.down(remote, back)

    assert up.files == down.files == 5
    assert tree_hashes(back) == tree_hashes(remote) == tree_hashes(src)
    ids = [r["chunk_id"] for r in env.chunks("data_upload")]
    assert len(ids) == len(set(ids)) == up.chunks_total
    assert all(i.startswith("task_1/data/sample/") for i in ids)


def test_a_directory_sent_again_holds_only_what_was_sent(env: Env) -> None:
    """A re-run stage sends a re-exported directory (new part names): the destination then
    holds exactly the new files, not the earlier send's too, and an unrelated file outside
    the destination directory is untouched."""
    src = env.staging / "sample"
    write_random(src / "part-00000-aaaa.parquet", 3 * CHUNK, seed=1)
    write_random(src / "nested" / "part-00001-aaaa.parquet", 100, seed=2)
    remote = env.remote / "task_1" / "data" / "sample"
    beside = write_random(env.remote / "task_1" / "data" / "keep.bin", 10, seed=3)
    env.up(src, remote)
    for old in src.rglob("*.parquet"):
        old.unlink()
    write_random(src / "part-00000-bbbb.parquet", CHUNK + 1, seed=4)
    Path(f"{remote}/stale.parquet.part").write_bytes(b"left by a broken attempt")

    env.up(src, remote)

    assert tree_hashes(remote) == tree_hashes(src)
    assert beside.exists()
    assert any("removed 3 files" in m for _level, m in env.log.lines)


def test_paramiko_transport_round_trip(env: Env) -> None:
    src = write_random(env.staging / "p.bin", CHUNK * 5 // 2)
    remote, back = env.remote / "p.bin", env.staging / "p_back.bin"
    assert env.up(src, remote, transport="paramiko").transport == "paramiko"
    env.down(remote, back, transport="paramiko")
    assert sha256(back) == sha256(src)


def test_progress_lines_and_result(env: Env) -> None:
    src = write_random(env.staging / "big.bin", 20 * CHUNK)
    seen: list[Progress] = []
    result = env.up(src, env.remote / "big.bin", progress=seen.append)
    assert seen and seen[-1].percent == 100.0
    assert (seen[-1].chunks_done, seen[-1].chunks_total) == (20, 20)
    assert "MB/s" in seen[-1].line() and "chunks 20/20" in seen[-1].line()
    d = result.as_dict()
    assert d["bytes"] == 20 * CHUNK and d["chunks_sent"] == 20 and d["chunks_skipped"] == 0
    assert d["mb_per_s"] > 0 and d["seconds"] > 0


# -- faults --


def _cut_after(sshd_server: LocalSshd, n: int, verified: list[str]) -> TransferHooks:
    """Kill every live SSH session (sshd's per-connection children) once n chunks are verified."""
    lock = threading.Lock()
    state = {"cut": False}

    def after_verify(chunk: ChunkSpec) -> None:
        with lock:
            verified.append(chunk.chunk_id)
            if len(verified) == n and not state["cut"]:
                state["cut"] = True
                assert sshd_server.kill_sessions() > 0

    return TransferHooks(after_verify=after_verify)


def _assert_no_verified_chunk_resent(rows: list[dict[str, Any]], verified_before_cut: list[str]) -> None:
    by_id = {r["chunk_id"]: r for r in rows}
    assert {r["status"] for r in rows} == {ChunkStatus.VERIFIED}
    for cid in verified_before_cut:
        assert by_id[cid]["send_count"] == 1, by_id[cid]
    for r in rows:  # a chunk is sent once, plus once per retry
        assert r["send_count"] <= 1 + r["retry_count"], r


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_connection_cut_mid_transfer_is_retried(env: Env, sshd_server: LocalSshd, direction: str) -> None:
    src = write_random(env.staging / "cut.bin", 24 * CHUNK)
    remote = env.remote / "cut.bin"
    verified: list[str] = []
    hooks = _cut_after(sshd_server, 6, verified)
    if direction == "upload":
        result, step, dest = env.up(src, remote, hooks=hooks), "data_upload", remote
    else:
        env.up(src, remote)
        result, step, dest = (
            env.down(remote, env.staging / "cut_back.bin", hooks=hooks),
            "result_download",
            None,
        )
        dest = env.staging / "cut_back.bin"

    assert sha256(dest) == sha256(src)
    assert result.chunks_retried >= 1 and result.chunks_sent == 24
    _assert_no_verified_chunk_resent(env.chunks(step), verified[:6])
    assert any("lost" in w or "closed" in w or "connect" in w for w in env.log.warnings())


def test_restart_after_failure_resumes_and_skips_verified_chunks(env: Env, sshd_server: LocalSshd) -> None:
    src = write_random(env.staging / "resume.bin", 16 * CHUNK)
    remote = env.remote / "resume.bin"
    verified: list[str] = []
    with pytest.raises(TransferError):
        env.up(src, remote, hooks=_cut_after(sshd_server, 5, verified), max_retries=0, parallel_workers=1)
    assert not remote.exists() and Path(f"{remote}.part").exists()
    before = {r["chunk_id"] for r in env.chunks("data_upload") if r["status"] == ChunkStatus.VERIFIED}
    assert len(before) >= 5

    result = env.up(src, remote)

    assert sha256(remote) == sha256(src)
    assert result.chunks_skipped == len(before) and result.chunks_sent == 16 - len(before)
    _assert_no_verified_chunk_resent(env.chunks("data_upload"), sorted(before))


def test_changed_source_starts_over(env: Env, sshd_server: LocalSshd) -> None:
    src = write_random(env.staging / "changing.bin", 8 * CHUNK)
    remote = env.remote / "changing.bin"
    with pytest.raises(TransferError):
        env.up(src, remote, hooks=_cut_after(sshd_server, 3, []), max_retries=0, parallel_workers=1)
    write_random(src, 9 * CHUNK + 5, seed=42)  # new content and size

    result = env.up(src, remote)

    assert sha256(remote) == sha256(src)
    assert result.chunks_skipped == 0 and result.chunks_sent == 10
    assert any("changed since the last attempt" in w for w in env.log.warnings())


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_corrupted_chunk_is_detected_and_resent(env: Env, direction: str) -> None:
    src = write_random(env.staging / "corrupt.bin", 8 * CHUNK)
    remote = env.remote / "corrupt.bin"
    victim = 3
    corrupted: list[str] = []

    def after_write(chunk: ChunkSpec, part: str) -> None:
        if chunk.offset == victim * CHUNK and not corrupted:
            corrupted.append(chunk.chunk_id)
            flip_byte(part, chunk.offset + 100)

    if direction == "upload":
        # in lockstep the hash is requested after after_write has flipped the byte
        env.up(src, remote, hooks=TransferHooks(after_write=after_write), pipeline_depth=1)
        dest, step = remote, "data_upload"
    else:
        env.up(src, remote)
        dest, step = env.staging / "corrupt_back.bin", "result_download"
        env.down(remote, dest, hooks=TransferHooks(after_write=after_write))

    assert corrupted and sha256(dest) == sha256(src)
    rows = {r["chunk_id"]: r for r in env.chunks(step)}
    assert rows[corrupted[0]]["send_count"] == 2 and rows[corrupted[0]]["retry_count"] == 1
    assert all(r["send_count"] == 1 for cid, r in rows.items() if cid != corrupted[0])
    assert any("checksum mismatch" in w for w in env.log.warnings())


def test_the_ssh_host_always_comes_after_a_double_dash(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection's host is never read as an ssh option: every ssh command line the transfer
    runs (the shared connection and each session) has `--` right before the host, so ssh takes a
    host of `-oProxyCommand=...` as a (bad) host name, and its command never runs."""
    ssh_lines: list[list[str]] = []
    popen = channel.subprocess.Popen

    def recording(argv: Any, *args: Any, **kwargs: Any) -> Any:
        if os.path.basename(str(argv[0])) == "ssh":
            ssh_lines.append([str(a) for a in argv])
        return popen(argv, *args, **kwargs)

    monkeypatch.setattr(channel.subprocess, "Popen", recording)
    src = write_random(env.staging / "x.bin", CHUNK)
    env.up(src, env.remote / "x.bin")
    marker = tmp_path / "proxy-command-ran"
    hostile = make_endpoint(env.sshd, env.remote, host=f"-oProxyCommand=touch {marker}")
    with pytest.raises(TransferError, match="hostname contains invalid characters"):
        env.up(src, env.remote / "y.bin", endpoint=hostile, max_retries=0)
    assert not marker.exists()
    assert len(ssh_lines) >= 3, ssh_lines  # the connection and a session, then the hostile connection
    for argv in ssh_lines:
        assert "--" in argv and argv[argv.index("--") + 1] in (env.sshd.host, hostile.host), argv


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_unreachable_server_fails_after_max_retries(env: Env, direction: str) -> None:
    ep = unreachable_endpoint(env.sshd, env.remote)
    src = write_random(env.staging / "x.bin", CHUNK)
    with pytest.raises(TransferError) as err:
        if direction == "upload":
            env.up(src, env.remote / "x.bin", endpoint=ep, max_retries=2)
        else:
            env.down(env.remote / "x.bin", env.staging / "y.bin", endpoint=ep, max_retries=2)
    message = str(err.value)
    assert "127.0.0.1" in message and str(ep.port) in message and "3 attempts" in message
    assert not (env.remote / "x.bin").exists() and not (env.staging / "y.bin").exists()
    assert len([w for w in env.log.warnings() if "retry" in w]) == 2


def test_remote_path_not_writable(env: Env) -> None:
    (env.remote / "blocker").write_text("a file where a directory should be")
    src = write_random(env.staging / "x.bin", 3 * CHUNK)
    dest = env.remote / "blocker" / "sub" / "x.bin"
    with pytest.raises(TransferError) as err:
        env.up(src, dest)
    assert not err.value.retryable
    assert "blocker" in str(err.value) and "Not a directory" in str(err.value)
    assert not dest.exists()


def test_local_source_missing(env: Env) -> None:
    ep = unreachable_endpoint(env.sshd, env.remote)  # proves no connection is attempted
    with pytest.raises(TransferError, match=r"local path .*missing\.bin does not exist") as err:
        env.up(env.staging / "missing.bin", env.remote / "x.bin", endpoint=ep)
    assert not err.value.retryable


def test_remote_source_missing(env: Env) -> None:
    with pytest.raises(TransferError, match=r"nothing_here\.parquet.*No such file") as err:
        env.down(env.remote / "nothing_here.parquet", env.staging / "p.parquet")
    assert not err.value.retryable
    assert not (env.staging / "p.parquet").exists()


def test_local_destination_not_writable(env: Env) -> None:
    src = write_random(env.remote / "r.bin", CHUNK)
    (env.staging / "blocker").write_text("file")
    with pytest.raises(TransferError, match="blocker"):
        env.down(src, env.staging / "blocker" / "r.bin")


# -- bad input: refused before any connection (the endpoint is unreachable) --


@pytest.mark.parametrize(
    ("direction", "source", "dest"),
    [
        ("upload", "{staging}/a.bin", "{remote}/../escape.bin"),
        ("upload", "{staging}/a.bin", "/etc/escape.bin"),
        ("upload", "{staging}/a.bin", "relative/path.bin"),
        ("upload", "{staging}/../outside.bin", "{remote}/a.bin"),
        ("upload", "/etc/passwd", "{remote}/passwd"),
        ("download", "{remote}/../../etc/passwd", "{staging}/passwd"),
        ("download", "/etc/passwd", "{staging}/passwd"),
        ("download", "{remote}/a.bin", "/tmp/elsewhere.bin"),
        ("download", "{remote}/a.bin", "{staging}/x/../../out.bin"),
        ("download", "{remote}", "{staging}/root.bin"),
    ],
)
def test_paths_escaping_roots_are_refused_before_connecting(
    env: Env, direction: str, source: str, dest: str
) -> None:
    write_random(env.staging / "a.bin", 10)
    ep = unreachable_endpoint(env.sshd, env.remote)
    src = source.format(staging=env.staging, remote=env.remote)
    dst = dest.format(staging=env.staging, remote=env.remote)
    run = upload if direction == "upload" else download
    step = "data_upload" if direction == "upload" else "result_download"
    with pytest.raises(UnsafePath):
        run(ep, [TransferItem(src, dst)], **env.kwargs(step))
    assert not env.log.lines  # nothing was attempted, not even a connection


def test_host_key_checking_off_is_a_warning(env: Env) -> None:
    src = write_random(env.staging / "h.bin", 10)
    env.up(src, env.remote / "h.bin", endpoint=make_endpoint(env.sshd, env.remote, strict=False))
    assert any("host key checking is OFF" in w for w in env.log.warnings())


def test_loopback_caps_parallel_streams_at_half_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert [stream_count(4, h) for h in ("127.0.0.1", "localhost", "::1", "10.0.0.7", "gpu-1")] == [
        1,
        1,
        1,
        4,
        4,
    ]
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert (stream_count(4, "127.0.0.1"), stream_count(16, "127.0.0.1")) == (4, 8)


def test_stale_chunk_rows_are_forgotten_when_a_file_shrinks(env: Env) -> None:
    src = write_random(env.staging / "shrink.bin", 6 * CHUNK)
    env.up(src, env.remote / "shrink.bin")
    write_random(src, 2 * CHUNK, seed=7)

    result = env.up(src, env.remote / "shrink.bin")

    assert sha256(env.remote / "shrink.bin") == sha256(src) and result.chunks_sent == 2
    assert sorted(r["chunk_id"] for r in env.chunks("data_upload")) == ["shrink.bin:0", "shrink.bin:1"]


def test_chunk_ids_are_stable_unique_and_fit_the_column() -> None:
    long_rel = "task_1/data/sample/" + "x" * 300 + ".parquet"
    other = "task_1/data/sample/" + "y" + "x" * 299 + ".parquet"
    ids = [chunk_id(rel, i) for rel in (long_rel, other) for i in range(3)]
    assert all(len(i) <= 100 for i in ids) and len(set(ids)) == 6
    assert chunk_id(long_rel, 1) == chunk_id(long_rel, 1)
    assert chunk_id("task_1/a.bin", 0) == "task_1/a.bin:0"


def oldest_python() -> str | None:
    """A Python 3.7 (the oldest the agent supports) if this machine has one."""
    candidates = [
        "/usr/bin/python3.7",
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.7*/bin/python3.7"))),
    ]
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


@pytest.mark.skipif(oldest_python() is None, reason="no Python 3.7 on this machine")
def test_agent_runs_on_the_oldest_supported_python(env: Env) -> None:
    """Training servers may run an old system Python: both directions with a 3.7 agent."""
    endpoint = dataclasses.replace(env.endpoint, python=oldest_python())
    src = write_random(env.staging / "old.bin", CHUNK * 5 // 2)
    remote, back = env.remote / "old.bin", env.staging / "old_back.bin"
    env.up(src, remote, endpoint=endpoint)
    env.down(remote, back, endpoint=endpoint)
    assert sha256(back) == sha256(src)


HOSTILE_LISTING = """
def list_files(path, root=None):  # a training server that lies about its files
    return [[NAME, 4, 0]]


if __name__ == "__main__":
"""


@pytest.mark.parametrize("name", ["../../escape.bin", "/tmp/escape.bin", "sub/../../escape.bin"])
def test_a_download_never_writes_where_a_hostile_servers_listing_points(
    env: Env, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A compromised training server runs what it likes in place of the agent: file names in its
    listing that leave the item being downloaded are refused before anything is written."""
    from fuxictr_workflow.transfer import channel

    hostile = channel.AGENT_SOURCE.replace(
        'if __name__ == "__main__":\n', HOSTILE_LISTING.replace("NAME", repr(name)), 1
    )
    assert hostile != channel.AGENT_SOURCE
    monkeypatch.setattr(channel, "AGENT_SOURCE", hostile)
    (env.remote / "out").mkdir()
    with pytest.raises(UnsafePath, match=r"listing of .*out: file .*escape\.bin") as err:
        env.down(env.remote / "out", env.staging / "task_1" / "predictions")
    assert not err.value.retryable
    assert not list(env.staging.parent.rglob("escape.bin*")) and not Path("/tmp/escape.bin").exists()
