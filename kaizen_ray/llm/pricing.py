"""What a model call costs: a small built-in price table, and the arithmetic.

Prices are USD per million tokens, prompt and completion apart, as the hosted
providers list them (list prices when this table was written; pass
``AutonomousConfig(pricing=...)`` for yours). Local providers (Ollama, or any
``base_url`` server) cost 0 unless priced.
"""

from __future__ import annotations

from kaizen_ray.core.config import AutonomousConfig, Pricing

__all__ = ["BUILTIN_PRICES", "call_cost", "pricing_for", "worst_case_cost"]

BUILTIN_PRICES: dict[str, Pricing] = {
    name: Pricing(input_per_million=i, output_per_million=o)
    for name, (i, o) in {
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "o3-mini": (1.10, 4.40),
    }.items()
}

FREE = Pricing(input_per_million=0.0, output_per_million=0.0)


def pricing_for(config: AutonomousConfig) -> Pricing:
    """``config.pricing``; else the built-in price of an ``"openai"`` model; else free.

    >>> pricing_for(AutonomousConfig(llm_provider="openai", model="gpt-4o-mini")).input_per_million
    0.15
    >>> pricing_for(AutonomousConfig(llm_provider="ollama", model="llama3.2:1b")) == FREE
    True
    """
    if config.pricing is not None:
        return config.pricing
    if config.llm_provider == "openai" and config.model in BUILTIN_PRICES:
        return BUILTIN_PRICES[config.model]
    return FREE


def call_cost(pricing: Pricing, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one call's reported usage.

    >>> call_cost(Pricing(input_per_million=1.0, output_per_million=2.0), 1000, 500)
    0.002
    """
    return (prompt_tokens * pricing.input_per_million + completion_tokens * pricing.output_per_million) / 1e6


def worst_case_cost(pricing: Pricing, prompt_bytes: int, max_tokens: int) -> float:
    """The most one call can cost: every prompt byte a token (no tokenizer makes more), plus ``max_tokens``.

    >>> worst_case_cost(Pricing(input_per_million=1.0, output_per_million=2.0), 1000, 500)
    0.002
    """
    return call_cost(pricing, prompt_bytes, max_tokens)
