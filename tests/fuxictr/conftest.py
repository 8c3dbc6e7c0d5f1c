"""The FuXiCTR stage modules' fixtures: one config per module (servers `local` and `zoo` on the
session's sshd) and the module's background train/infer runs (runs.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fuxictr_workflow.domain.config import WorkflowConfig, load_config
from scripts.sshd import SshdInfo
from tests.conftest import VENV_PYTHON, write_config
from tests.fuxictr.runs import PIPELINES_OF, ZOO, Pipelines


@pytest.fixture(scope="module")
def cfg(sshd: SshdInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkflowConfig]:
    tmp = tmp_path_factory.mktemp("fuxictr")
    ssh = {
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "key_path": sshd.key_path,
        "known_hosts": sshd.known_hosts,
        "python": VENV_PYTHON,
    }
    zoo = {"fuxictr_config_dir": str(ZOO / "config"), "model_zoo_path": str(ZOO / "model_zoo")}
    data = {
        "servers": {
            "local": {**ssh, "remote_root": str(tmp / "remote")},
            "zoo": {**ssh, "remote_root": str(tmp / "remote_zoo"), **zoo},
        },
        "storage": {"staging_dir": str(tmp / "staging"), "log_dir": str(tmp / "logs" / "workflow")},
        "store": {"url": f"sqlite:///{tmp / 'workflow.db'}"},
    }
    path = write_config(tmp / "config.yaml", data)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FUXICTR_WORKFLOW_CONFIG", str(path))
        yield load_config(path)


@pytest.fixture(scope="module")
def pipelines(cfg: WorkflowConfig, request: pytest.FixtureRequest) -> Iterator[Pipelines]:
    runs = Pipelines(cfg)
    for item in request.session.items:  # the selected tests of this module, in their order
        if getattr(item, "module", None) is request.module and "pipelines" in item.fixturenames:
            callspec = getattr(item, "callspec", None)
            wanted = PIPELINES_OF.get(item.originalname) or ([callspec.params["expid"]] if callspec else [])
            for expid in wanted:
                runs.start(expid)
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)
