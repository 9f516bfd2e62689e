"""A run published again on a later UTC day keeps one row per run score in Langfuse, in the
traces' environment, on a server that files scores by the day it received them."""

from __future__ import annotations

import pytest

from evals.dataset_run import DatasetRun
from evals.langfuse_datasets import publish_run
from tests.evals.test_dataset_langfuse import ITEMS, right_on_even_items
from tests.fakes import ScriptedModel
from tests.langfuse_server import GENERATIONS


@pytest.fixture(params=GENERATIONS)
def langfuse_generation(request: pytest.FixtureRequest) -> str:
    return request.param


def test_publishing_on_a_later_day_keeps_one_row_per_run_score(make_settings, make_runtime, fake_langfuse):
    settings = make_settings(fake_langfuse, APP_ENVIRONMENT="eval-lab")
    runtime = make_runtime(settings, model=ScriptedModel(right_on_even_items))
    DatasetRun(runtime, "days", "gsm8k").run(ITEMS)
    runtime.feedback.telemetry.flush()
    store = runtime.feedback.store
    offset = {"s": 0.0}
    real = fake_langfuse.state.clock
    fake_langfuse.state.clock = lambda: real() + offset["s"]
    first = publish_run(settings, store, "days")
    assert first.ok, first.message
    offset["s"] = 86400.0 + 60  # the next day, every create of the first publish long landed
    again = publish_run(settings, store, "days")
    assert again.ok, again.message
    run_rows = [r for r in fake_langfuse.state.rows() if r.get("datasetRunId")]
    assert run_rows and fake_langfuse.state.upsert_violations == []
    assert len({r["id"] for r in run_rows}) == len(run_rows)
    assert {r["environment"] for r in run_rows} == {"eval-lab"}
