"""evals/langfuse_datasets.py writes the Langfuse SDK's span attributes under names of its own, so it
imports none of the SDK's private modules. These tests, and only these, read those private modules:
an SDK upgrade that renames, moves or changes one of the names fails here, saying which."""

from __future__ import annotations

import importlib
import importlib.metadata
import typing
from types import ModuleType

import pytest

from evals import langfuse_datasets as ours

SDK_VERSION = importlib.metadata.version("langfuse")
OUR_NAMES = sorted(name for name in vars(ours.LangfuseAttributes) if name.isupper())


def _sdk(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(
            f"The Langfuse SDK {SDK_VERSION} has no module {module} ({exc}): find where its span "
            f"attribute names went and check evals/langfuse_datasets.py against them."
        )


@pytest.mark.parametrize("name", OUR_NAMES)
def test_each_attribute_name_is_the_sdks(name: str) -> None:
    sdk = getattr(_sdk("langfuse._client.attributes").LangfuseOtelSpanAttributes, name, None)
    mine = getattr(ours.LangfuseAttributes, name)
    assert sdk == mine, (
        f"LangfuseOtelSpanAttributes.{name} is {sdk!r} in the Langfuse SDK {SDK_VERSION}, but "
        f"evals/langfuse_datasets.py writes {mine!r}: the server would not read it there."
    )


def test_the_tracer_name_is_the_sdks() -> None:
    sdk = getattr(_sdk("langfuse._client.constants"), "LANGFUSE_TRACER_NAME", None)
    assert sdk == ours.LANGFUSE_TRACER_NAME, (
        f"LANGFUSE_TRACER_NAME is {sdk!r} in the Langfuse SDK {SDK_VERSION}, but "
        f"evals/langfuse_datasets.py sends its spans under the scope {ours.LANGFUSE_TRACER_NAME!r}."
    )


def test_the_experiment_attributes_on_every_span_are_the_ones_run_experiment_propagates() -> None:
    propagation = _sdk("langfuse._client.propagation")
    keys = typing.get_args(propagation.InternalPropagatedKeys)
    sdk = {propagation._get_propagated_span_key(key) for key in keys}
    assert sdk == set(ours.EXPERIMENT_EVERY_SPAN), (
        f"run_experiment in the Langfuse SDK {SDK_VERSION} propagates {sorted(sdk)} to every span of an "
        f"item; evals/langfuse_datasets.py EXPERIMENT_EVERY_SPAN has {sorted(ours.EXPERIMENT_EVERY_SPAN)}."
    )


def test_observation_attributes_are_what_create_span_attributes_makes() -> None:
    create_span_attributes = _sdk("langfuse._client.attributes").create_span_attributes
    cases = [
        {"input": "2+2?", "output": "4"},
        {
            "input": "Wie viel kostet ein Ei? €",
            "output": None,
            "level": "ERROR",
            "status_message": "the model failed",
            "metadata": {"text": "ü", "flag": True, "n": 3, "ms": 12.5, "none": None},
        },
        {"input": {"question": "x"}, "output": ["a", 1], "metadata": {"nested": {"a": [1, "b"]}}},
    ]
    for kwargs in cases:
        assert ours.observation_attributes(**kwargs) == create_span_attributes(**kwargs), (
            f"create_span_attributes of the Langfuse SDK {SDK_VERSION} writes {kwargs} differently"
        )


def test_the_sdk_version_sent_is_the_installed_sdks() -> None:
    assert ours.LANGFUSE_VERSION == _sdk("langfuse._version").__version__
