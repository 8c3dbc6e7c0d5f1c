"""The training server side, through the real sshd on 127.0.0.1: a tampered runner bundle is
replaced before it can run, remote_root is private to the SSH user, and the transfer agent
never follows a symlink (so nothing planted on the server reads or overwrites files
elsewhere)."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fuxictr_workflow.domain.config import ServerConfig, WorkflowConfig
from fuxictr_workflow.orchestration.operators.fuxictr import TrainOperator
from fuxictr_workflow.ssh.runner_bundle import REMOTE_DIR, bundle_digest, ship_runner
from fuxictr_workflow.ssh.servers import RemoteRootError, endpoint, prepare_remote_root
from fuxictr_workflow.store import WorkflowStore, get_store
from fuxictr_workflow.transfer import TransferError, TransferItem, download, upload
from scripts.sshd import SshdInfo
from tests.conftest import new_task
from tests.stage_runs import run_stage, stage_context
from tests.transfer_helpers import ListLog, make_endpoint, transfer_config, write_random

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def cfg(make_config: Callable[..., WorkflowConfig], sshd: SshdInfo) -> WorkflowConfig:
    return make_config(sshd)


# -------- the runner bundle --------


def bundle_dir(cfg: WorkflowConfig) -> Path:
    return Path(cfg.server("local").remote_root) / ".runner" / bundle_digest()


TAMPERINGS: dict[str, Callable[[Path, Path], None]] = {
    "appended code": lambda runner, marker: runner.write_text(
        runner.read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\n"
    ),
    "replaced by a symlink": lambda runner, marker: (
        (evil := runner.with_name("evil.py")).write_text(f"open({str(marker)!r}, 'w').write('ran')\n"),
        runner.unlink(),
        runner.symlink_to(evil),
    ),
    "same size, one byte changed": lambda runner, marker: runner.write_bytes(
        runner.read_bytes()[:-2] + bytes([runner.read_bytes()[-2] ^ 1]) + runner.read_bytes()[-1:]
    ),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_tampered_runner_is_replaced_never_run(
    cfg: WorkflowConfig, tmp_path: Path, tamper: Callable[[Path, Path], None]
) -> None:
    store: WorkflowStore = get_store(cfg.store.url)
    ep = endpoint(cfg)
    client = ep.paramiko_client()
    try:
        target = ship_runner(client, prepare_remote_root(ep, client).remote_root)
    finally:
        client.close()
    runner = Path(target) / "runner.py"
    assert runner.read_bytes() == (REMOTE_DIR / "runner.py").read_bytes()

    marker = tmp_path / "tampered_runner_ran"
    tamper(runner, marker)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    # no data uploaded: the genuine runner fails at once; a tampered one would write the marker
    with pytest.raises(Exception, match="train"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    assert not marker.exists(), "the modified runner ran"
    assert not runner.is_symlink() and runner.read_bytes() == (REMOTE_DIR / "runner.py").read_bytes()
    messages = [e["message"] for e in store.logs_after(task_id)]
    assert any("is not the shipped one" in m and "runner.py" in m for m in messages), messages


# -------- remote_root --------


def test_remote_root_defaults_under_home_and_is_created_0700(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo
) -> None:
    name = f"fuxictr_test_root_{uuid.uuid4().hex[:8]}"
    cfg = make_config(sshd, servers={"local": {"remote_root": name}})
    ep = endpoint(cfg)
    client = ep.paramiko_client()
    try:
        prepared = prepare_remote_root(ep, client)
        home = client.open_sftp().normalize(".")
    finally:
        client.close()
    root = Path(prepared.remote_root)
    try:
        assert root == Path(home) / name
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
    finally:
        root.rmdir()
    assert ServerConfig.model_fields["remote_root"].default == "fuxictr_workflow"  # relative: under home


UNSAFE_ROOTS: dict[str, Callable[[Path], None]] = {
    "group/world-writable": lambda p: (p.mkdir(), p.chmod(0o777)),
    "symlink": lambda p: (p.with_name("real").mkdir(), p.symlink_to(p.with_name("real"))),
    "a file": lambda p: p.write_text("x"),
}


@pytest.mark.parametrize("make", UNSAFE_ROOTS.values(), ids=UNSAFE_ROOTS.keys())
def test_unsafe_remote_root_is_refused(
    make_config: Callable[..., WorkflowConfig], sshd: SshdInfo, tmp_path: Path, make: Callable[[Path], None]
) -> None:
    root = tmp_path / "shared_root"
    make(root)
    cfg = make_config(sshd, servers={"local": {"remote_root": str(root)}})
    ep = endpoint(cfg)
    client = ep.paramiko_client()
    try:
        with pytest.raises(RemoteRootError, match="remote_root"):
            prepare_remote_root(ep, client)
    finally:
        client.close()


def test_stage_refuses_unsafe_remote_root(cfg: WorkflowConfig, tmp_path: Path) -> None:
    root = Path(cfg.server("local").remote_root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o777)
    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    with pytest.raises(Exception, match="writable by group or others"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    assert not (root / ".runner").exists(), "nothing may be shipped into it"


# -------- the transfer agent and symlinks --------


@pytest.fixture
def roots(tmp_path: Path) -> SimpleNamespace:
    ns = SimpleNamespace(
        staging=tmp_path / "staging", remote=tmp_path / "remote", outside=tmp_path / "outside"
    )
    for d in (ns.staging, ns.remote, ns.outside):
        d.mkdir()
    ns.secret = ns.outside / "secret.txt"
    ns.secret.write_text("private key material")
    return ns


def _kwargs(store: WorkflowStore, roots: SimpleNamespace, step: str) -> dict[str, Any]:
    return {
        "cfg": transfer_config(max_retries=0),
        "store": store,
        "task_id": new_task(store),
        "step": step,
        "local_root": str(roots.staging),
        "log": ListLog(),
    }


def _down(sshd: SshdInfo, store: WorkflowStore, roots: SimpleNamespace, src: Path) -> Any:
    dest = roots.staging / "out"
    return download(
        make_endpoint(sshd, roots.remote),
        [TransferItem(str(src), str(dest))],
        **_kwargs(store, roots, "result_download"),
    )


def _up(sshd: SshdInfo, store: WorkflowStore, roots: SimpleNamespace, dest: Path) -> Any:
    src = roots.staging / "data"
    src.mkdir(exist_ok=True)
    write_random(src / "part-0.parquet", 3000)
    return upload(
        make_endpoint(sshd, roots.remote),
        [TransferItem(str(src), str(dest))],
        **_kwargs(store, roots, "data_upload"),
    )


def test_download_refuses_a_symlinked_file_in_the_source(
    sshd: SshdInfo, store: WorkflowStore, roots: SimpleNamespace
) -> None:
    out = roots.remote / "task_1" / "output"
    out.mkdir(parents=True)
    (out / "predictions.parquet").write_text("real")
    (out / "leak.parquet").symlink_to(roots.secret)
    with pytest.raises(TransferError, match="symlink"):
        _down(sshd, store, roots, out)
    assert "private key material" not in "".join(
        p.read_text(errors="ignore") for p in roots.staging.rglob("*") if p.is_file()
    )


def test_download_refuses_a_symlinked_source(
    sshd: SshdInfo, store: WorkflowStore, roots: SimpleNamespace
) -> None:
    link = roots.remote / "predictions.parquet"
    link.symlink_to(roots.secret)
    with pytest.raises(TransferError, match="symlink"):
        _down(sshd, store, roots, link)
    assert not any(p.is_file() for p in roots.staging.rglob("*"))


def test_download_refuses_a_symlinked_directory_on_the_way(
    sshd: SshdInfo, store: WorkflowStore, roots: SimpleNamespace
) -> None:
    (roots.remote / "task_1").symlink_to(roots.outside)
    with pytest.raises(TransferError, match="symlink"):
        _down(sshd, store, roots, roots.remote / "task_1" / "secret.txt")
    assert not any(p.is_file() for p in roots.staging.rglob("*"))


def test_upload_refuses_a_symlinked_destination_directory(
    sshd: SshdInfo, store: WorkflowStore, roots: SimpleNamespace
) -> None:
    (roots.remote / "task_1").symlink_to(roots.outside)
    before = sorted(os.listdir(roots.outside))
    with pytest.raises(TransferError, match="symlink"):
        _up(sshd, store, roots, roots.remote / "task_1" / "data")
    assert sorted(os.listdir(roots.outside)) == before


def test_upload_does_not_write_through_a_planted_part_symlink(
    sshd: SshdInfo, store: WorkflowStore, roots: SimpleNamespace
) -> None:
    dest = roots.remote / "task_1" / "data"
    dest.mkdir(parents=True)
    (dest / "part-0.parquet.part").symlink_to(roots.secret)
    with pytest.raises(TransferError, match="symlink"):
        _up(sshd, store, roots, dest)
    assert roots.secret.read_text() == "private key material"


def test_symlink_free_transfer_still_works(
    sshd: SshdInfo, store: WorkflowStore, roots: SimpleNamespace
) -> None:
    """The control: the same upload into a plain directory succeeds."""
    result = _up(sshd, store, roots, roots.remote / "task_1" / "data")
    assert result.files == 1
    assert (roots.remote / "task_1" / "data" / "part-0.parquet").stat().st_size == 3000
