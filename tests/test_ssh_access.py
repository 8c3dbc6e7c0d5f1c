"""SSH connections as the SSH provider documents them, against the real sshd: every host_key
form SSHHook accepts, inline private keys, ciphers and disabled algorithms, through both
paramiko (SSHHook's client) and OpenSSH (the transfer engine's fast transport); bad
settings fail with the server named before anything runs."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fuxictr_workflow.domain.config import ServerConfig
from fuxictr_workflow.ssh.servers import Endpoint
from fuxictr_workflow.ssh.ssh_access import SSHAccess, SSHAccessError, connection_from_config
from scripts.sshd import SshdInfo


def connection(sshd: SshdInfo, **extra: Any) -> Any:
    from airflow.sdk import Connection

    return Connection(
        conn_id="gpu_ssh",
        conn_type="ssh",
        host=sshd.host,
        port=sshd.port,
        login=sshd.username,
        extra=json.dumps({"key_file": sshd.key_path, **extra}),
    )


def paramiko_echo(access: SSHAccess, word: str) -> str:
    client = access.connect()
    try:
        _stdin, stdout, _stderr = client.exec_command(f"echo {word}")
        return stdout.read().decode().strip()
    finally:
        client.close()


def openssh_echo(access: SSHAccess, word: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", *access.openssh_options(), "-p", str(access.port), "-l", access.username, access.host, "echo", word],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def assert_both_transports_connect(access: SSHAccess) -> None:
    assert paramiko_echo(access, "via-paramiko") == "via-paramiko"
    out = openssh_echo(access, "via-openssh")
    assert out.returncode == 0 and out.stdout.strip() == "via-openssh", out.stderr


@pytest.mark.parametrize(
    "form",
    ["ed25519 with type", "rsa with type", "rsa bare base64"],
)
def test_every_host_key_form_pins_the_key(sshd: SshdInfo, form: str) -> None:
    kind = "rsa" if form.startswith("rsa") else "ed25519"
    key = sshd.host_key(kind)
    access = SSHAccess("gpu", connection(sshd, host_key=key.split()[1] if "bare" in form else key))
    assert access.strict_host_key_checking
    assert_both_transports_connect(access)


def test_a_wrong_host_key_is_refused_by_both_transports(sshd: SshdInfo, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    access = SSHAccess("gpu", connection(sshd, host_key=wrong))
    with pytest.raises(Exception, match="(?i)host key"):
        access.connect()
    out = openssh_echo(access, "never")
    assert out.returncode != 0 and "host key" in out.stderr.lower() and "never" not in out.stdout


def test_host_key_with_no_host_key_check_is_refused_naming_the_server(sshd: SshdInfo) -> None:
    with pytest.raises(SSHAccessError, match="server gpu .*Must check host key"):
        SSHAccess("gpu", connection(sshd, host_key=sshd.host_key(), no_host_key_check=True))
    # the config's `strict_host_key_checking: false` over a connection that pins a key: the same
    with pytest.raises(SSHAccessError, match="server gpu"):
        SSHAccess("gpu", connection(sshd, host_key=sshd.host_key()), no_host_key_check=True)


def test_no_host_key_check_connects_and_reads_as_not_strict(sshd: SshdInfo) -> None:
    access = SSHAccess("gpu", connection(sshd, no_host_key_check=True))
    assert not access.strict_host_key_checking
    assert "StrictHostKeyChecking=no" in access.openssh_options()
    assert_both_transports_connect(access)


def test_an_inline_private_key_works_for_both_transports(sshd: SshdInfo) -> None:
    from airflow.sdk import Connection

    conn = Connection(
        conn_id="inline",
        conn_type="ssh",
        host=sshd.host,
        port=sshd.port,
        login=sshd.username,
        extra=json.dumps({"private_key": Path(sshd.key_path).read_text(), "host_key": sshd.host_key()}),
    )
    access = SSHAccess("gpu", conn)
    assert_both_transports_connect(access)
    key_file = access.openssh_options()[access.openssh_options().index("-i") + 1]
    assert os.stat(key_file).st_mode & 0o077 == 0 and os.stat(os.path.dirname(key_file)).st_mode & 0o077 == 0


def test_ciphers_and_disabled_algorithms_reach_both_transports(sshd: SshdInfo) -> None:
    access = SSHAccess(
        "gpu",
        connection(
            sshd,
            host_key=sshd.host_key(),
            ciphers=["aes256-ctr", "aes128-ctr"],  # paramiko keeps to the set, in its own order
            disabled_algorithms={"kex": ["curve25519-sha256", "curve25519-sha256@libssh.org"]},
            conn_timeout=7,
        ),
    )
    opts = access.openssh_options()
    assert "Ciphers=aes256-ctr,aes128-ctr" in opts and "ConnectTimeout=7" in opts
    assert "KexAlgorithms=-curve25519-sha256,curve25519-sha256@libssh.org" in opts
    assert_both_transports_connect(access)
    client = access.connect()
    try:
        transport = client.get_transport()
        assert transport.remote_cipher in ("aes256-ctr", "aes128-ctr")
        assert not transport.kex_engine.__class__.__name__.lower().startswith("kexcurve25519")
    finally:
        client.close()


def test_a_cipher_the_server_refuses_fails_both_transports(sshd: SshdInfo) -> None:
    access = SSHAccess("gpu", connection(sshd, host_key=sshd.host_key(), ciphers=["3des-cbc"]))
    with pytest.raises(Exception, match="(?i)cipher|negotiat|incompatible"):
        access.connect()
    assert openssh_echo(access, "never").returncode != 0


def test_config_form_becomes_a_connection_pinned_from_its_known_hosts(sshd: SshdInfo, tmp_path: Path) -> None:
    server = ServerConfig(
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_path=sshd.key_path,
        known_hosts=sshd.known_hosts,
    )
    conn = connection_from_config("gpu", server)
    assert conn.extra_dejson["host_key"] == sshd.host_key() and conn.extra_dejson["key_file"] == sshd.key_path
    ep = Endpoint(name="gpu", ssh=SSHAccess("gpu", conn), remote_root=str(tmp_path), python=sys.executable)
    assert ep.address == f"{sshd.username}@{sshd.host}:{sshd.port}"
    assert_both_transports_connect(ep.ssh)


def test_config_form_with_a_known_hosts_lacking_the_server_names_the_field(
    sshd: SshdInfo, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    server = ServerConfig(
        host=sshd.host, port=sshd.port, username=sshd.username, key_path=sshd.key_path, known_hosts=str(empty)
    )
    with pytest.raises(
        SSHAccessError, match=r"servers\.gpu\.known_hosts: .* has no host key for \[127\.0\.0\.1\]"
    ):
        connection_from_config("gpu", server)


def _memory_files() -> list[str]:
    fd_dir = f"/proc/{os.getpid()}/fd"
    links = []
    for name in os.listdir(fd_dir):
        try:
            links.append(os.readlink(os.path.join(fd_dir, name)))
        except OSError:  # closed meanwhile
            continue
    return sorted(link for link in links if link.startswith("/memfd:fxw-"))


def test_resolving_many_times_leaves_one_file_per_distinct_key(sshd: SshdInfo) -> None:
    """A pinned host key becomes one known_hosts memory file per process and content, not one
    per lookup (the old code leaked a temporary file on every resolution)."""
    SSHAccess("gpu", connection(sshd, host_key=sshd.host_key())).openssh_options()
    before = _memory_files()
    paths = set()
    for _ in range(50):
        opts = SSHAccess("gpu", connection(sshd, host_key=sshd.host_key())).openssh_options()
        paths.add(next(o.split("=", 1)[1] for o in opts if o.startswith("UserKnownHostsFile=")))
    (path,) = paths
    assert Path(path).read_text().split()[1:] == sshd.host_key().split()
    assert _memory_files() == before


KILLED_CHILD = """
import json, subprocess, sys, time
from airflow.sdk import Connection
from fuxictr_workflow.ssh.ssh_access import SSHAccess
args = json.loads(sys.argv[1])
conn = Connection(conn_id="inline", conn_type="ssh", host=args["host"], port=args["port"],
                  login=args["user"], extra=json.dumps({"private_key": args["key"], "host_key": args["host_key"]}))
access = SSHAccess("gpu", conn)
opts = access.openssh_options()
out = subprocess.run(["ssh", *opts, "-p", str(access.port), "-l", access.username, "--", access.host, "echo", "up"],
                     capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
print(json.dumps({"echo": out.stdout.strip(), "stderr": out.stderr, "key": opts[opts.index("-i") + 1]}), flush=True)
time.sleep(600)
"""


def test_an_inline_key_leaves_no_file_when_its_process_is_killed(sshd: SshdInfo, tmp_path: Path) -> None:
    """A task process SIGKILLed while it holds an inline key (what Airflow does to a task past
    its heartbeat) leaves no copy of the key on disk: OpenSSH read it from memory."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = {
        "host": sshd.host, "port": sshd.port, "user": sshd.username,
        "key": Path(sshd.key_path).read_text(), "host_key": sshd.host_key(),
    }  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, json.dumps(args)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip
    try:
        assert child.stdout is not None
        said = json.loads(child.stdout.readline())
        assert said["echo"] == "up", said["stderr"]
        assert said["key"].startswith(f"/proc/{child.pid}/fd/")
        assert Path(said["key"]).read_text() == args["key"].strip() + "\n"
    finally:
        child.kill()
        child.wait()
    assert not Path(said["key"]).exists()
    assert list(tmp.iterdir()) == []


def test_a_password_connection_is_not_offered_to_openssh(sshd: SshdInfo) -> None:
    from airflow.sdk import Connection

    from fuxictr_workflow.transfer.channel import pick_transport
    from fuxictr_workflow.transfer.errors import TransferError

    conn = Connection(
        conn_id="pw", conn_type="ssh", host=sshd.host, port=sshd.port, login=sshd.username,
        password="secret", extra=json.dumps({"host_key": sshd.host_key()}),
    )  # fmt: skip
    ep = Endpoint(name="gpu", ssh=SSHAccess("gpu", conn), remote_root="/tmp", python=sys.executable)
    assert ep.ssh.openssh_unusable() == "the connection authenticates with a password"
    assert pick_transport("auto", ep) == "paramiko"
    with pytest.raises(TransferError, match="password"):
        pick_transport("openssh", ep)


def test_base64_of_an_unrelated_blob_is_a_clear_error(sshd: SshdInfo) -> None:
    junk = base64.b64encode(b"not a key").decode()
    with pytest.raises(SSHAccessError, match="server gpu"):
        SSHAccess("gpu", connection(sshd, host_key=f"ssh-ed25519 {junk}"))


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_a_wrong_host_key_fails_a_transfer_at_once(
    sshd: SshdInfo, tmp_path: Path, store: Any, transport: str
) -> None:
    """Not trusted is final: no retry (a retry cannot change the key), nothing written."""
    from fuxictr_workflow.transfer import TransferError, TransferItem, upload
    from tests.conftest import new_task
    from tests.transfer_helpers import ListLog, transfer_config, write_random

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    remote = tmp_path / "remote"
    remote.mkdir()
    ep = Endpoint(name="gpu", ssh=SSHAccess("gpu", connection(sshd, host_key=wrong)), remote_root=str(remote),
                  python=sys.executable)  # fmt: skip
    src = write_random(tmp_path / "staging" / "data.bin", 1000)
    log = ListLog()
    with pytest.raises(TransferError) as refused:
        upload(
            ep, [TransferItem(str(src), str(remote / "data.bin"))],
            cfg=transfer_config(max_retries=3, retry_backoff_s=5), store=store, task_id=new_task(store),
            step="data_upload", local_root=str(tmp_path / "staging"), log=log, transport=transport,
        )  # fmt: skip
    assert not refused.value.retryable and "host key" in str(refused.value).lower()
    assert not log.warnings() and not list(remote.iterdir())


def test_a_server_naming_an_airflow_connection_uri(
    sshd: SshdInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ssh_conn_id` resolved the way Airflow finds connections (here AIRFLOW_CONN_<ID> with
    the URI form the provider documents), through the same code path as the config form."""
    from fuxictr_workflow.domain.config import parse_config
    from fuxictr_workflow.ssh.servers import endpoint

    monkeypatch.setenv("AIRFLOW_CONN_GPU_SSH", sshd.conn_uri())
    cfg = parse_config(
        {"servers": {"gpu": {"ssh_conn_id": "gpu_ssh", "remote_root": str(tmp_path)}}}, tmp_path
    )
    ep = endpoint(cfg, "gpu")
    assert (ep.host, ep.port, ep.username) == (sshd.host, sshd.port, sshd.username)
    assert ep.strict_host_key_checking
    assert_both_transports_connect(ep.ssh)
    # config may turn checking off only where the connection pins nothing
    cfg = parse_config(
        {"servers": {"gpu": {"ssh_conn_id": "gpu_ssh", "strict_host_key_checking": False}}}, tmp_path
    )
    with pytest.raises(SSHAccessError, match="server gpu"):
        endpoint(cfg, "gpu")


def test_train_with_a_wrong_host_key_fails_at_once_and_starts_nothing(
    sshd: SshdInfo, tmp_path: Path, make_config: Any
) -> None:
    """Stage train against a server whose pinned key does not match: the step fails with the
    reason, not retried, and nothing was created on the server."""
    from airflow.sdk.exceptions import AirflowFailException

    from fuxictr_workflow.orchestration.operators.fuxictr import TrainOperator
    from fuxictr_workflow.store import get_store
    from tests.conftest import new_task
    from tests.stage_runs import run_stage, stage_context

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(
        f"[{sshd.host}]:{sshd.port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n"
    )
    cfg = make_config(sshd, servers={"local": {"known_hosts": str(wrong)}})
    store = get_store(cfg.store.url)
    task_id = new_task(store, server="local", experiment_id="DeepFM_demo")
    with pytest.raises(AirflowFailException, match="(?i)host key"):
        run_stage(TrainOperator(task_id="train"), stage_context(task_id))
    train = next(s for s in store.get_task(task_id)["steps"] if s["step_name"] == "train")
    assert train["status"] == "failed" and "host key" in train["error_message"].lower()
    assert not Path(cfg.server("local").remote_root).exists()
