"""A store with realistic demo data for the dashboard: its screenshots and its browser test.

A month of chat turns of three models (the local one at no cost, a hosted one with prices, a
self-hosted endpoint whose price is unknown), each with the spans the app records (agent, steps,
LLM calls with their messages, tool calls), user ratings with reasons and comments, two judges
with their reasoning, a conversation judge, a few errors, and two dataset runs to compare.
`hostile=True` adds turns whose question, answer, span names, attributes, reasons and comments
carry script and HTML injections (the browser test checks they stay inert).

    python -m bench.dashboard_demo --data-dir /tmp/dash-demo       # then DATA_DIR=/tmp/dash-demo python app.py
    python -m bench.dashboard_demo --screenshots docs               # docs/dashboard.png, docs/trace.png
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.dashboard import _pick  # noqa: E402
from evals.jobs import eval_score_id, job_id  # noqa: E402
from feedback.store import SpanRecord, Store, TraceRecord  # noqa: E402
from feedback.votes import SCORE_NAME, score_id_for  # noqa: E402

DAY = 86400.0
# (model id, provider, class of its LLM spans, share of turns, $ per prompt token, $ per completion
# token; None: no known price)
MODELS = [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "local", "LocalLlamaModel.generate", 0.45, 0.0, 0.0),
    ("gpt-4o-mini", "openai", "OpenAIServerModel.generate", 0.35, 0.15e-6, 0.6e-6),
    ("my-endpoint/llama-3-8b", "openai", "OpenAIServerModel.generate", 0.20, None, None),
]
QUESTIONS = [
    ("What is 17% of 240?", "0.17 * 240", "40.8", "17% of 240 is 40.8."),
    (
        "How many days are there between 2024-03-01 and 2024-12-25?",
        "(date(2024,12,25)-date(2024,3,1)).days",
        "299",
        "There are 299 days between them.",
    ),
    ("Convert 72 degrees Fahrenheit to Celsius.", "(72 - 32) * 5 / 9", "22.22", "72 °F is about 22.2 °C."),
    ("What is the square root of 1764?", "math.sqrt(1764)", "42.0", "The square root of 1764 is 42."),
    (
        "If I save $250 a month at 4% a year, how much do I have after 3 years?",
        "sum(250 * (1 + 0.04/12) ** k for k in range(36))",
        "9547.11",
        "About $9,547 after 3 years.",
    ),
    ("Which is larger, 2**100 or 10**30?", "2**100 > 10**30", "True", "2**100 is larger (about 1.27e30)."),
    (
        "Sort these numbers: 42, 7, 19, 3, 88",
        "sorted([42, 7, 19, 3, 88])",
        "[3, 7, 19, 42, 88]",
        "3, 7, 19, 42, 88.",
    ),
    (
        "How many weekdays are in March 2025?",
        "sum(1 for d in range(1, 32) if date(2025, 3, d).weekday() < 5)",
        "21",
        "March 2025 has 21 weekdays.",
    ),
    (
        "What is the average of 12, 15, 22 and 31?",
        "statistics.mean([12, 15, 22, 31])",
        "20",
        "The average is 20.",
    ),
    (
        "Split a bill of $186.40 between 7 people.",
        "round(186.40 / 7, 2)",
        "26.63",
        "Each person pays $26.63.",
    ),
]
REASONS = [("Incorrect", 0.45), ("Not helpful", 0.25), ("Too slow", 0.12), (None, 0.18)]
COMMENTS = [
    None,
    None,
    "the number is wrong",
    "it ignored half of my question",
    "took way too long",
    "the code was fine but the answer was rounded badly",
]
REASONING = [
    "The answer states the right result and explains it briefly.",
    "The code computes the right value, but the final answer rounds it incorrectly.",
    "The answer does not address the question that was asked.",
    "Correct and concise; the steps match the question.",
    "The agent reached the step limit without an answer.",
]
SYSTEM_PROMPT = (
    "You are an expert assistant who can solve any task using code blobs. You will be given a task to "
    "solve as best you can. To do so, you have been given access to a list of tools..."
)

# Injections the viewer and the page must show as text: each would run if inserted as HTML.
HOSTILE_QUESTION = '<script>window.__pwned="question"</script> What is **2+2**? [click](javascript:alert(1))'
HOSTILE_ANSWER = "<img src=x onerror=\"window.__pwned='answer'\"> # Heading <b>bold</b>"
HOSTILE_SPAN = "<svg onload=\"window.__pwned='span'\"></svg>"
HOSTILE_ATTRIBUTE = '"><img src=x onerror="window.__pwned=\'attribute\'">'
HOSTILE_REASON = "<img src=x onerror=\"window.__pwned='reason'\">"
HOSTILE_COMMENT = "<iframe src=\"javascript:window.__pwned='comment'\"></iframe>"


def _id(rng: random.Random, n: int = 32) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


@dataclass
class Demo:
    """What the demo put in the store (tests look things up here)."""

    now: float
    traces: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)
    hostile: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    costs: dict[str, float | None] = field(default_factory=dict)


def _has_cost_columns(store: Store) -> bool:
    with store.read() as db:
        try:
            db.execute(text("SELECT cost FROM traces WHERE 1 = 0")).all()
            db.execute(text("SELECT cost FROM spans WHERE 1 = 0")).all()
        except Exception:  # noqa: BLE001 - before the costs migration the columns are not there
            return False
    return True


def _turn(
    rng: random.Random,
    *,
    start: float,
    model: tuple[Any, ...],
    question: tuple[str, str, str, str],
    session_id: str,
    user_id: str,
    error: bool,
    hostile: bool = False,
) -> tuple[list[SpanRecord], TraceRecord, float | None]:
    model_id, provider, llm_name, _share, in_price, out_price = model
    ask, code, result, answer = question
    if hostile:
        ask, answer = HOSTILE_QUESTION, HOSTILE_ANSWER
    trace_id = _id(rng)
    root_id, agent_id = _id(rng, 16), _id(rng, 16)
    speed = {"local": 0.6, "openai": 1.0}[provider] * (1.6 if model_id.startswith("my-endpoint") else 1.0)
    steps = 1 if rng.random() < 0.7 else 2
    if error:
        steps = 3
    spans: list[SpanRecord] = []
    t = start + 0.004
    cost: float | None = 0.0 if in_price is not None else None
    prompt_total = completion_total = 0
    for n in range(1, steps + 1):
        step_id, llm_id = _id(rng, 16), _id(rng, 16)
        step_start = t
        llm_time = rng.lognormvariate(0.2, 0.45) * speed
        prompt, completion = rng.randint(1800, 2600) + 400 * (n - 1), rng.randint(40, 180)
        prompt_total += prompt
        completion_total += completion
        final = n == steps and not error
        step_code = f"result = {code}\nprint(result)" if n == 1 else f"final_answer({answer!r})"
        if final and n == 1:
            step_code = f"result = {code}\nfinal_answer(f'{answer}')"
        reply = f"Thought: I will compute it with Python.\n<code>\n{step_code}\n</code>"
        llm_attrs: dict[str, Any] = {
            "openinference.span.kind": "LLM",
            "llm.model_name": model_id,
            "input.mime_type": "application/json",
            "input.value": json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": f"New task:\n{ask}"},
                    ]
                }
            ),
            "output.mime_type": "application/json",
            "output.value": json.dumps({"role": "assistant", "content": reply}),
            "llm.token_count.prompt": prompt,
            "llm.token_count.completion": completion,
            "llm.token_count.total": prompt + completion,
        }
        if hostile and n == 1:
            llm_attrs["input.value"] = json.dumps(
                {"messages": [{"role": "user", "content": HOSTILE_ATTRIBUTE}]}
            )
        spans.append(
            SpanRecord(
                trace_id,
                llm_id,
                step_id,
                llm_name,
                "LLM",
                t + 0.002,
                t + 0.002 + llm_time,
                "OK",
                None,
                llm_attrs,
                prompt,
                completion,
                prompt + completion,
            )
        )
        if cost is not None:
            cost += prompt * in_price + completion * out_price
        t += 0.002 + llm_time
        run_time = rng.uniform(0.01, 0.08)
        if hostile and n == 1:
            tool_id = _id(rng, 16)
            spans.append(
                SpanRecord(
                    trace_id,
                    tool_id,
                    step_id,
                    HOSTILE_SPAN,
                    "TOOL",
                    t,
                    t + run_time / 2,
                    "OK",
                    None,
                    {
                        "tool.name": HOSTILE_SPAN,
                        "input.value": json.dumps({"args": [HOSTILE_ATTRIBUTE]}),
                        "output.value": HOSTILE_ATTRIBUTE,
                    },
                )
            )
        t += run_time
        failed = error and n == steps
        observation = (
            f"Execution logs:\n{result}\nLast output from code snippet:\n{result if not final else answer}"
        )
        spans.append(
            SpanRecord(
                trace_id,
                step_id,
                agent_id,
                f"Step {n}",
                "CHAIN",
                step_start,
                t,
                "ERROR" if failed else "OK",
                "AgentMaxStepsError: Reached max steps." if failed else None,
                {"openinference.span.kind": "CHAIN", "output.value": observation},
            )
        )
        t += 0.001
    end = t + 0.003
    output = None if error else answer
    spans.append(
        SpanRecord(
            trace_id,
            agent_id,
            root_id,
            "ChatAgent.run",
            "AGENT",
            start + 0.002,
            t,
            "ERROR" if error else "OK",
            "AgentMaxStepsError: Reached max steps." if error else None,
            {
                "openinference.span.kind": "AGENT",
                "input.value": json.dumps({"task": ask}),
                "output.value": output or "",
            },
            prompt_total,
            completion_total,
            prompt_total + completion_total,
        )
    )
    spans.append(
        SpanRecord(
            trace_id,
            root_id,
            None,
            "Smolagent-Trace",
            None,
            start,
            end,
            "ERROR" if error else "OK",
            "AgentMaxStepsError: Reached max steps." if error else None,
            {"input.value": ask, "output.value": output or "", "user.id": user_id, "session.id": session_id},
        )
    )
    trace = TraceRecord(
        id=trace_id,
        name="Smolagent-Trace",
        input=ask,
        output=output,
        user_id=user_id,
        session_id=session_id,
        status="ERROR" if error else "OK",
        status_message="AgentMaxStepsError: Reached max steps." if error else None,
        start_time=start,
        end_time=end,
        model=model_id,
        tags=["smolagents-chat"] + (["beta"] if rng.random() < 0.2 else []),
        metadata={"provider": provider, "model_id": model_id, "app_version": "0.1.0"},
    )
    return spans, trace, cost


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _judge(
    store: Store,
    trace_id: str,
    session_id: str,
    user_id: str,
    name: str,
    value: float,
    data_type: str,
    reasoning: str,
    when: float,
) -> None:
    score_id = eval_score_id(name, "v1", "turn", trace_id)
    store.upsert_score(
        score_id=score_id,
        trace_id=trace_id,
        name=name,
        value=value,
        data_type=data_type,
        source="EVAL",
        session_id=session_id,
        user_id=user_id,
        note=reasoning,
        keep_note=False,
        metadata={"evaluator": name, "evaluator_version": "v1", "target_kind": "turn", "target_id": trace_id},
    )
    with store.transaction() as db:
        db.execute(
            text(
                """INSERT INTO eval_jobs (id, evaluator, version, kind, target_kind, target_id, revision,
                       trigger, status, created, called_at, finished, latency_ms, score_id, value, reasoning)
                   VALUES (:id, :name, 'v1', 'llm', 'turn', :tid, '', 'new-trace', 'completed', :t, :t,
                       :t, 900, :sid, :value, :reasoning)"""
            ),
            {
                "id": job_id(name, "v1", "turn", trace_id, ""),
                "name": name,
                "tid": trace_id,
                "t": when,
                "sid": score_id,
                "value": value,
                "reasoning": reasoning,
            },
        )


def build(
    store: Store, *, now: float, days: int = 30, turns: int = 600, seed: int = 7, hostile: bool = False
) -> Demo:
    """Fill `store` with the demo; deterministic for one seed and `now`."""
    rng = random.Random(seed)
    demo = Demo(now=now)
    with_cost = _has_cost_columns(store)
    users = [f"user-{n:02d}" for n in range(1, 25)]
    sessions: dict[str, tuple[str, int]] = {}
    for _ in range(turns):
        # More traffic lately: the start times lean towards now.
        age = days * DAY * (rng.random() ** 1.4)
        start = now - age - 30
        model = _pick(rng, [(m, m[3]) for m in MODELS])
        user = rng.choice(users)
        session_key = f"{user}-{int(age // (DAY / 3))}"
        if session_key not in sessions:
            sessions[session_key] = (uuid.UUID(int=rng.getrandbits(128)).hex, 0)
        session_id, count = sessions[session_key]
        sessions[session_key] = (session_id, count + 1)
        question = rng.choice(QUESTIONS)
        error = rng.random() < (0.06 if model[0].startswith("HuggingFaceTB") else 0.02)
        spans, trace, cost = _turn(
            rng, start=start, model=model, question=question, session_id=session_id, user_id=user, error=error
        )
        _write(store, spans, trace, cost, with_cost, demo)
        # Ratings: about 40% of turns; the local model is liked less.
        liked_share = {"local": 0.45, "openai": 0.8}[model[1]] - (0.4 if error else 0.0)
        if rng.random() < 0.4:
            liked = rng.random() < liked_share
            reason = None if liked else _pick(rng, REASONS)
            comment = None if liked else rng.choice(COMMENTS)
            store.upsert_score(
                score_id=score_id_for(trace.id),
                trace_id=trace.id,
                name=SCORE_NAME,
                value=1.0 if liked else 0.0,
                data_type="BOOLEAN",
                source="user",
                session_id=session_id,
                user_id=user,
                reason=reason,
                note=comment,
            )
            if not liked:
                demo.disliked.append(trace.id)
        # Two judges on about half of the turns.
        if rng.random() < 0.5:
            good = rng.random() < liked_share + 0.1
            helpful = round(min(1.0, max(0.0, rng.gauss(0.8 if good else 0.35, 0.12))), 2)
            reasoning = REASONING[4] if error else rng.choice(REASONING[:4] if good else REASONING[1:3])
            _judge(
                store,
                trace.id,
                session_id,
                user,
                "helpfulness",
                helpful,
                "NUMERIC",
                reasoning,
                trace.end_time + 60,
            )
            _judge(
                store,
                trace.id,
                session_id,
                user,
                "correctness",
                1.0 if good else 0.0,
                "BOOLEAN",
                reasoning,
                trace.end_time + 60,
            )
    # A conversation judge on sessions of two turns or more, dated when they ended.
    for session_id, count in list(sessions.values())[:120]:
        if count < 2:
            continue
        row = store.row(
            "SELECT MAX(end_time) AS t, MAX(user_id) AS u FROM traces WHERE session_id = :s",
            {"s": session_id},
        )
        score_id = eval_score_id("goal-reached", "v1", "conversation", session_id, str(count))
        store.upsert_score(
            score_id=score_id,
            trace_id="",
            name="goal-reached",
            value=1.0 if rng.random() < 0.7 else 0.0,
            data_type="BOOLEAN",
            source="EVAL",
            session_id=session_id,
            user_id=row["u"],
            note="The user got the number they asked for.",
            keep_note=False,
        )
        with store.transaction() as db:
            db.execute(
                text("UPDATE scores SET created = :c, updated = :c WHERE id = :id"),
                {"c": _iso(float(row["t"]) + 300), "id": score_id},
            )
    if hostile:
        _hostile(store, rng, now, with_cost, demo)
    _dataset_runs(store, rng, now, demo)
    # What the judges have not got to yet, and a few ratings still waiting for Langfuse.
    with store.transaction() as db:
        db.execute(text("UPDATE traces SET eval_seen = 1"))
        db.execute(
            text(
                "UPDATE traces SET eval_seen = 0 WHERE id IN (SELECT id FROM traces ORDER BY start_time DESC LIMIT 7)"
            )
        )
        db.execute(text("UPDATE scores SET delivered_version = version WHERE source = 'EVAL'"))
    return demo


def _write(
    store: Store, spans: list[SpanRecord], trace: TraceRecord, cost: float | None, with_cost: bool, demo: Demo
) -> None:
    store.write_spans(spans, [trace])
    demo.traces.append(trace.id)
    demo.costs[trace.id] = cost
    if with_cost:
        with store.transaction() as db:
            db.execute(text("UPDATE traces SET cost = :c WHERE id = :id"), {"c": cost, "id": trace.id})
            for span in spans:
                if span.kind == "LLM":
                    model = next(m for m in MODELS if m[0] == span.attributes.get("llm.model_name"))
                    value = (
                        None
                        if model[4] is None
                        else (span.prompt_tokens or 0) * model[4] + (span.completion_tokens or 0) * model[5]
                    )
                    db.execute(
                        text("UPDATE spans SET cost = :c WHERE trace_id = :t AND span_id = :s"),
                        {"c": value, "t": span.trace_id, "s": span.span_id},
                    )


def _hostile(store: Store, rng: random.Random, now: float, with_cost: bool, demo: Demo) -> None:
    spans, trace, cost = _turn(
        rng,
        start=now - 3600,
        model=MODELS[1],
        question=QUESTIONS[0],
        session_id="hostile-session",
        user_id=HOSTILE_REASON,
        error=False,
        hostile=True,
    )
    _write(store, spans, trace, cost, with_cost, demo)
    store.upsert_score(
        score_id=score_id_for(trace.id),
        trace_id=trace.id,
        name=SCORE_NAME,
        value=0.0,
        data_type="BOOLEAN",
        source="user",
        session_id="hostile-session",
        user_id="attacker",
        reason=HOSTILE_REASON,
        note=HOSTILE_COMMENT,
    )
    _judge(
        store,
        trace.id,
        "hostile-session",
        "attacker",
        "helpfulness",
        0.1,
        "NUMERIC",
        HOSTILE_ATTRIBUTE,
        now - 3000,
    )
    demo.hostile.append(trace.id)
    demo.disliked.append(trace.id)


def _dataset_runs(store: Store, rng: random.Random, now: float, demo: Demo) -> None:
    items = [f"gsm8k-{n:04d}" for n in range(50)]
    for name, accuracy, created in (
        ("gsm8k-smollm2-v1", 0.06, now - 9 * DAY),
        ("gsm8k-smollm2-v2", 0.2, now - 2 * DAY),
    ):
        with store.transaction() as db:
            db.execute(
                text(
                    "INSERT INTO dataset_runs (name, dataset, model, created, updated) VALUES (:n, 'gsm8k', :m, :t, :t)"
                ),
                {"n": name, "m": MODELS[0][0], "t": created},
            )
            for item in items:
                right = rng.random() < accuracy
                db.execute(
                    text(
                        """INSERT INTO dataset_results (run, item_id, input, expected, answer, strict, flexible,
                               has_number, error, latency_ms, created)
                           VALUES (:r, :i, 'question', '42', :a, :s, :s, 1, NULL, :l, :t)"""
                    ),
                    {
                        "r": name,
                        "i": item,
                        "a": "42" if right else "41",
                        "s": int(right),
                        "l": rng.lognormvariate(7.3 if name.endswith("v1") else 7.0, 0.3),
                        "t": created,
                    },
                )
        demo.runs.append(name)


def screenshots(folder: Path) -> None:
    """docs/dashboard.png and docs/trace.png, from a demo store served by the real app."""
    import time

    from playwright.sync_api import sync_playwright

    from app import build_app, create_runtime
    from config.settings import settings_from_env
    from tests.fakes import ScriptedModel
    from tests.helpers import free_port

    data = Path(tempfile.mkdtemp(prefix="dash-demo-"))
    settings = settings_from_env({"DATA_DIR": str(data), "EVALUATORS_FILE": "off"})
    runtime = create_runtime(settings, model=ScriptedModel(model_id="HuggingFaceTB/SmolLM2-135M-Instruct"))
    demo = build(runtime.feedback.store, now=time.time())
    app = build_app(runtime=runtime)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
            page.goto(url)
            page.locator("#plot-turns canvas, #plot-turns svg").first.wait_for(timeout=30_000)
            page.locator("#dash-range input").click()
            page.get_by_role("option", name="Last 30 days").click()
            page.wait_for_timeout(3000)
            page.screenshot(path=str(folder / "dashboard.png"), full_page=True)
            page.get_by_role("tab", name="Worst answers").click()
            # A disliked answer that a judge scored too and that took two steps.
            row = (
                page.locator("#dash-worst .virtual-row", has_text="Incorrect")
                .filter(has_text="helpfulness")
                .first
            )
            row.wait_for(timeout=15_000)
            row.locator(".body-cell").nth(1).click()
            page.locator("#tv-waterfall").wait_for(timeout=15_000)
            page.locator("#dash-trace details").nth(-1).evaluate("d => d.open = true")
            page.wait_for_timeout(800)
            page.locator("#dash-tabs").screenshot(path=str(folder / "trace.png"))
            browser.close()
    finally:
        app.close()
        runtime.feedback.close()
    for name in ("dashboard.png", "trace.png"):
        _shrink(folder / name)
    print(f"wrote {folder / 'dashboard.png'} and {folder / 'trace.png'} ({len(demo.traces)} demo turns)")


def _shrink(path: Path) -> None:
    """A 256-colour PNG: a third of the size, the same picture for a page of flat colours."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="fill the store under this DATA_DIR")
    parser.add_argument("--screenshots", type=Path, help="write dashboard.png and trace.png to this folder")
    parser.add_argument("--turns", type=int, default=600)
    args = parser.parse_args(argv)
    if args.screenshots:
        screenshots(args.screenshots)
    if args.data_dir:
        import time

        store = Store(args.data_dir / "feedback.sqlite3")
        demo = build(store, now=time.time(), turns=args.turns)
        store.close()
        print(f"{len(demo.traces)} demo turns in {args.data_dir / 'feedback.sqlite3'}")
    if not (args.screenshots or args.data_dir):
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
