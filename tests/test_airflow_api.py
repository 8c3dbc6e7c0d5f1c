"""AirflowApi's answer handling, over httpx's mock transport (the calls themselves are tested
on the real API server: tests/test_api.py, tests/security)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from fuxictr_workflow.api import airflow_api
from fuxictr_workflow.api.airflow_api import AirflowApi, AirflowRefused


def api_answering(handler: Callable[[httpx.Request], httpx.Response]) -> AirflowApi:
    api = AirflowApi.__new__(AirflowApi)
    api._client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://airflow")
    return api


def answers(*codes: int) -> tuple[Callable[[httpx.Request], httpx.Response], list[int]]:
    sent: list[int] = []
    left: Iterator[int] = iter(codes)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(next(left), json={"detail": "database error"})

    return handler, sent


@pytest.fixture
def sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_api, "_metadata_db_is_sqlite", lambda: True)
    monkeypatch.setattr(airflow_api, "RETRY_PAUSE_S", 0.01)


def test_on_sqlite_a_5xx_is_sent_again_up_to_three_times(sqlite: None) -> None:
    handler, sent = answers(500, 503, 200)
    assert api_answering(handler).send("PATCH", "/run", {"state": "failed"}) == {"detail": "database error"}
    assert len(sent) == 3
    handler, sent = answers(500, 500, 500, 200)
    with pytest.raises(AirflowRefused) as refused:
        api_answering(handler).send("PATCH", "/run")
    assert (refused.value.status_code, len(sent)) == (500, 3)


def test_other_refusals_and_other_databases_are_not_retried(
    sqlite: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, sent = answers(409, 200)
    with pytest.raises(AirflowRefused) as refused:
        api_answering(handler).send("POST", "/dagRuns")
    assert (refused.value.status_code, refused.value.detail, len(sent)) == (409, "database error", 1)
    monkeypatch.setattr(airflow_api, "_metadata_db_is_sqlite", lambda: False)
    handler, sent = answers(500, 200)
    with pytest.raises(AirflowRefused):
        api_answering(handler).send("PATCH", "/run")
    assert len(sent) == 1


def test_no_answer_is_a_503_saying_so() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(AirflowRefused) as refused:
        api_answering(unreachable).send("GET", "/dag")
    assert refused.value.status_code == 503
    assert refused.value.detail == "Airflow did not answer: ConnectError: connection refused"
