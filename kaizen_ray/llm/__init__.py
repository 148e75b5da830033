"""LLM agents, Kaizen's way: signatures, the OpenAI-compatible client, tools, pricing (no Ray).

Builds on ``kaizen_ray.core`` only; the Ray runtime runs these agents like any
other. The ``openai`` package is needed only when a model is called
(``pip install 'kaizen_ray[llm]'``). Import public names from ``kaizen_ray``.
"""
