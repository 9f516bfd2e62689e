"""The agents of an A/B experiment (VARIANTS_FILE, config/variants.py): one agent factory per
variant, built once per app and once per agent process from the variant's own settings.

Variants that use the same model (provider, model, endpoint, key, GGUF file, temperature) share
one model object, as every session of the app shares one without an experiment; a variant that
changes only the temperature gets a copy of its model at that temperature (one client, one
llama.cpp process). A model object passed in (tests, embedders) serves every variant that does
not change the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from smolagents import Model, Tool

from agent.session import AgentFactory
from agent.tools import build_tools
from config.settings import Settings
from config.variants import Variant
from feedback.tracing import register_model_class
from llms.models import ModelChoice, build_model, with_temperature
from sandbox.executor import CodeSandbox


def _model_key(variant: Variant) -> tuple[Any, ...]:
    s = variant.settings
    return (
        s.model_provider,
        s.model_id,
        s.hf_token,
        s.openai_base_url,
        s.openai_api_key,
        s.local_model_path,
        s.local_n_ctx,
        s.local_max_tokens,
        s.local_model_repack,
        s.local_model_in_process,
        variant.temperature,
    )


def variant_models(
    settings: Settings, names: Iterable[str], model: Model | None = None
) -> dict[str, tuple[Model, ModelChoice]]:
    """The model (and its banner's choice) of each named variant. Built before the tracing is
    instrumented: the model classes are registered for their LLM spans here."""
    experiment = settings.experiment
    assert experiment is not None
    built: dict[tuple[Any, ...], tuple[Model, ModelChoice]] = {}
    models: dict[str, tuple[Model, ModelChoice]] = {}
    for name in names:
        variant = experiment.variant(name)
        if model is not None and not variant.changes_model:
            choice = ModelChoice("custom", str(model.model_id), "a model object was passed in")
            models[name] = (with_temperature(model, variant.temperature), choice)
        else:
            key = _model_key(variant)
            if key not in built:
                built[key] = build_model(variant.settings, temperature=variant.temperature)
            models[name] = built[key]
        register_model_class(type(models[name][0]))
    return models


def remote_choice(variant: Variant) -> ModelChoice:
    """What the banner and the traces say of a variant whose agents run in agent processes."""
    s = variant.settings
    return ModelChoice(s.model_provider, s.model_id, s.provider_reason)


def variant_factories(
    settings: Settings,
    models: dict[str, tuple[Model, ModelChoice]],
    sandbox: CodeSandbox | None,
    extra_tools: list[Tool] | None = None,
) -> dict[str, AgentFactory]:
    """Each variant's agent factory (its settings, model, tools and prompts), sharing one sandbox."""
    experiment = settings.experiment
    assert experiment is not None
    factories: dict[str, AgentFactory] = {}
    for name, (model, _choice) in models.items():
        variant = experiment.variant(name)
        tools = [*build_tools(variant.settings.agent_tools), *(extra_tools or [])]
        factories[name] = AgentFactory(variant.settings, model, tools, sandbox, variant=variant)
    return factories


def hosted_variants(settings: Settings) -> list[str]:
    """The variants whose agents run in agent processes (hosted models, AGENT_PROCESSES > 0)."""
    experiment = settings.experiment
    if experiment is None or settings.agent_processes <= 0:
        return []
    return [v.name for v in experiment.variants if v.settings.model_provider != "local"]


def code_shares(settings: Settings) -> int:
    """Processes that split the code memory budget: the agent processes, and the app's own when
    some variants' agents run there too (an offline model beside hosted ones)."""
    hosted = hosted_variants(settings)
    experiment = settings.experiment
    mixed = bool(hosted) and experiment is not None and len(hosted) < len(experiment.variants)
    return max(1, settings.agent_processes) + (1 if mixed else 0)
