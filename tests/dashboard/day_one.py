"""A store as a new user has it after an hour or a day: a few turns, votes, judges, one dataset run.

Shared by the dashboard's first-day tests (handlers, queries) and its browser test.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from feedback.store import SpanRecord, Store, TraceRecord
from feedback.votes import SCORE_NAME, score_id_for

LOCAL = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the bundled model's id (llms.local_llm.GGUF_NAME)
LOCAL_Q8 = "SmolLM2-135M-Instruct.Q8_0.gguf"  # the same model, another quantisation
CHAT = ["smolagents-chat"]


def trace_id(name: str) -> str:
    return f"{name:0>32}"


def turn(
    store: Store,
    name: str,
    start: float,
    *,
    model: str = LOCAL,
    latency: float = 1.0,
    tokens: tuple[int, int] = (100, 10),
    cost: float | None = 0.0,
    status: str = "OK",
    user: str = "ann",
    session: str = "s1",
    tags: list[str] | None = None,
    question: str | None = None,
) -> str:
    """One chat turn: its root span, one LLM call with tokens and cost, the trace summary."""
    tid = trace_id(name)
    end = start + latency
    root = f"{name:0>15}r"
    store.write_spans(
        [
            SpanRecord(tid, root, None, "chat-turn", "AGENT", start, end, status, None, {}),
            SpanRecord(
                tid,
                f"{name:0>15}l",
                root,
                "generate",
                "LLM",
                start,
                end,
                "OK",
                None,
                {},
                prompt_tokens=tokens[0],
                completion_tokens=tokens[1],
                total_tokens=sum(tokens),
                cost=cost,
            ),
        ],  # fmt: skip
        [
            TraceRecord(
                tid,
                "chat-turn",
                question or f"question {name}",
                f"answer {name}",
                user,
                session,
                status,
                None,
                start,
                end,
                model,
                CHAT if tags is None else tags,
                {"model_id": model},
            )
        ],  # fmt: skip
    )
    return tid


def vote(store: Store, tid: str, value: float, reason: str | None = None, note: str | None = None) -> str:
    """A person's vote, as feedback.votes writes it."""
    return store.upsert_score(
        score_id=score_id_for(tid), trace_id=tid, name=SCORE_NAME, value=value, data_type="BOOLEAN",
        source="user", user_id="ann", session_id="s1", reason=reason, note=note,
    ).id  # fmt: skip


def judge(
    store: Store,
    tid: str,
    name: str,
    value: float | None,
    *,
    reasoning: str | None = None,
    demo: bool | None = None,
    data_type: str = "NUMERIC",
    string_value: str | None = None,
    trace: str | None = None,
) -> str:
    """A judge's (or check's) score as evals.worker writes it; `demo` True marks the bundled demo
    judge in the metadata, None leaves the mark out (scores written before it existed)."""
    metadata: dict[str, Any] = {"evaluator": name, "evaluator_version": "v1", "target_kind": "turn"}
    if demo is not None:
        metadata["demo_judge"] = demo
    score_id = f"{name}-{tid}"
    store.upsert_score(
        score_id=score_id, trace_id=tid if trace is None else trace, name=name, value=value,
        string_value=string_value, data_type=data_type, source="EVAL", user_id="ann", session_id="s1",
        note=reasoning, keep_note=False, metadata=metadata,
    )  # fmt: skip
    return score_id


def dataset_run(
    store: Store, run: str, items: list[tuple[str, str, str, bool, str | None]], at: float
) -> None:
    """A dataset run with (item id, question, answer, right, trace id) items, as evals writes it."""
    with store.transaction() as db:
        db.execute(
            text(
                "INSERT INTO dataset_runs (name, dataset, model, created, updated) VALUES (:r, 'gsm8k', :m, :t, :t)"
            ),
            {"r": run, "m": LOCAL, "t": at},
        )
        for item_id, question, answer, right, tid in items:
            db.execute(
                text(
                    """INSERT INTO dataset_results (run, item_id, input, expected, answer, trace_id, strict,
                           flexible, has_number, error, latency_ms, created, graded)
                       VALUES (:r, :i, :q, '#### 4', :a, :t, :s, :s, 1, NULL, 900.0, :at, 1)"""
                ),
                {"r": run, "i": item_id, "q": question, "a": answer, "t": tid, "s": int(right), "at": at},
            )
