"""The running app, put together: agents (here or in agent processes), the model, feedback.

Owns: runtime (Runtime, create_runtime: sessions per tab, the agent factory, shutdown) and
agent_host (an agent process: agents plus the tracing they report to). Imports agent/, llms/,
sandbox/, feedback/ and config/; never evals/ or dashboard/, which sit above it (the online
evaluation is passed in by the app).
"""
