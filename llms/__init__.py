"""Which LLM the agent talks to and how: the choice from the settings, the hosted clients and
the offline model.

Owns: models (the choice), openai_model (a lean streaming client for OpenAI-compatible
servers), local_llm (the offline model as a smolagents Model), model_process / model_host (the
supervised process llama.cpp runs in), llama_engine (llama.cpp itself). Imports config/ and
sandbox/ (process helpers and the socket protocol) only.
"""
