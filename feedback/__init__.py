"""Traces and scores: tracing, the local store (SQLite or Postgres), votes, costs, the outbox
and its delivery to Langfuse, retention, and the `python -m feedback` CLI.

Imports config/ only: nothing from agent/, llms/, sandbox/, runtime/, evals/ or dashboard/.
"""
