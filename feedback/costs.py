"""What an LLM call cost, in US dollars.

Hosted models are priced by `genai-prices` (kept up to date by its maintainers; no price table
is written here), MODEL_PRICES overrides or adds prices per model id (self-hosted endpoints),
local models (llama.cpp GGUF files) cost zero, and anything else is None: unknown, never zero.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from genai_prices import Usage, calc_price

log = logging.getLogger(__name__)

# Our provider names, as genai-prices names the provider (None: let it find the model).
_PROVIDERS = {"openai": None, "hf": None}
MILLION = 1_000_000


def is_local_model(model_id: str) -> bool:
    """llama.cpp runs GGUF files on this machine: the model id of a local model is its file name."""
    return model_id.lower().endswith(".gguf")


@dataclass(frozen=True)
class Pricing:
    """Prices of the models this app calls; `overrides` are dollars per million tokens (input, output)."""

    overrides: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> Pricing:
        return cls({model_id: (inp, out) for model_id, inp, out in settings.model_prices})

    def cost(
        self,
        model_id: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        *,
        provider: str | None = None,
    ) -> float | None:
        """The cost of one call, or None when it cannot be known."""
        model_id = model_id or ""
        if model_id in self.overrides:
            per_input, per_output = self.overrides[model_id]
            per_token: tuple[float, float] | None = (per_input / MILLION, per_output / MILLION)
        elif provider == "local" or is_local_model(model_id):
            return 0.0
        elif not model_id:
            return None
        else:
            per_token = _prices(provider or "", model_id)
        if per_token is None or (prompt_tokens is None and completion_tokens is None):
            return None
        return round((prompt_tokens or 0) * per_token[0] + (completion_tokens or 0) * per_token[1], 10)


@lru_cache(maxsize=256)
def _prices(provider: str, model_id: str) -> tuple[float, float] | None:
    """(input, output) dollars per token, from a million-token probe of each."""
    try:
        source = _PROVIDERS.get(provider)
        inp = calc_price(Usage(input_tokens=MILLION, output_tokens=0), model_ref=model_id, provider_id=source)
        out = calc_price(Usage(input_tokens=0, output_tokens=MILLION), model_ref=model_id, provider_id=source)
    except LookupError:
        log.info(
            "No price known for model %s: its cost is shown as unknown (MODEL_PRICES can set one)", model_id
        )
        return None
    return float(inp.total_price) / MILLION, float(out.total_price) / MILLION
