"""Which LLM the agent talks to, chosen from the settings and explained at start."""

from __future__ import annotations

from dataclasses import dataclass

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


def build_model(settings: Settings) -> tuple[Model, ModelChoice]:
    """Create the model once per app; the local one loads its weights on first use."""
    provider = settings.model_provider
    if provider == "hf":
        model: Model = InferenceClientModel(model_id=settings.model_id, token=settings.hf_token or None)
    elif provider == "openai":
        model = StreamingOpenAIModel(
            model_id=settings.model_id,
            api_base=settings.openai_base_url or None,
            api_key=settings.openai_api_key or "not-needed",
        )
    else:
        model = LocalLlamaModel(
            settings.local_model_path or None,
            n_ctx=settings.local_n_ctx,
            max_tokens=settings.local_max_tokens,
            repack=settings.local_model_repack,
            in_process=settings.local_model_in_process,
        )
    return model, ModelChoice(provider, str(model.model_id), settings.provider_reason)
