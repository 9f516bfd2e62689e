"""What an LLM call cost, in US dollars: hosted models priced by `genai-prices` (kept up to date
by its maintainers; no price table written here), the local model at zero, and None (unknown,
never zero) for a model the package does not know.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from genai_prices import Usage, calc_price

log = logging.getLogger(__name__)

# Our provider names, as genai-prices names the provider (None: let it find the model).
_PROVIDERS = {"openai": None, "hf": None}


def call_cost(
    provider: str, model_id: str, prompt_tokens: int | None, completion_tokens: int | None
) -> float | None:
    """The cost of one call, or None when it cannot be known."""
    if provider == "local":
        return 0.0
    if prompt_tokens is None and completion_tokens is None:
        return None
    per_token = _prices(provider, model_id)
    if per_token is None:
        return None
    return round((prompt_tokens or 0) * per_token[0] + (completion_tokens or 0) * per_token[1], 10)


@lru_cache(maxsize=256)
def _prices(provider: str, model_id: str) -> tuple[float, float] | None:
    """(input, output) dollars per token, from a million-token probe of each."""
    try:
        million = 1_000_000
        source = _PROVIDERS.get(provider)
        inp = calc_price(Usage(input_tokens=million, output_tokens=0), model_ref=model_id, provider_id=source)
        out = calc_price(Usage(input_tokens=0, output_tokens=million), model_ref=model_id, provider_id=source)
    except LookupError:
        log.info("No price known for model %s (%s): its cost is shown as unknown", model_id, provider)
        return None
    return float(inp.total_price) / million, float(out.total_price) / million
