"""Which LLM the agent talks to, chosen from the settings and explained at start."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from smolagents import InferenceClientModel, Model

from config.settings import Settings
from llms.local_llm import LocalLlamaModel
from llms.openai_model import StreamingOpenAIModel


@dataclass(frozen=True)
class ModelChoice:
    """The provider and model in use, and why: printed at start and put on every trace."""

    provider: str
    model_id: str
    reason: str

    def banner(self) -> str:
        return f"Model: provider={self.provider} model={self.model_id} (because {self.reason})"


def build_model(settings: Settings, *, temperature: float | None = None) -> tuple[Model, ModelChoice]:
    """Create the model once per app; the local one loads its weights on first use.

    `temperature` (an A/B variant's): sent with every call; None keeps the model's own default
    (the server's for hosted models, 0 for the offline one)."""
    provider = settings.model_provider
    sampling = {"temperature": temperature} if temperature is not None else {}
    if provider == "hf":
        model: Model = InferenceClientModel(
            model_id=settings.model_id, token=settings.hf_token or None, **sampling
        )
    elif provider == "openai":
        model = StreamingOpenAIModel(
            model_id=settings.model_id,
            api_base=settings.openai_base_url or None,
            api_key=settings.openai_api_key or "not-needed",
            **sampling,
        )
    else:
        model = LocalLlamaModel(
            settings.local_model_path or None,
            n_ctx=settings.local_n_ctx,
            max_tokens=settings.local_max_tokens,
            repack=settings.local_model_repack,
            in_process=settings.local_model_in_process,
            **sampling,
        )
    return model, ModelChoice(provider, str(model.model_id), settings.provider_reason)


def with_temperature(model: Model, temperature: float | None) -> Model:
    """The same model at another temperature (a copy sharing its client and its llama.cpp process),
    for an A/B variant that changes only that; the model itself when None."""
    if temperature is None:
        return model
    twin = copy.copy(model)
    if isinstance(twin, LocalLlamaModel):
        twin.temperature = temperature
    else:
        kwargs: dict[str, Any] = dict(getattr(twin, "kwargs", None) or {})
        kwargs["temperature"] = temperature
        twin.kwargs = kwargs
    return twin
