"""`python app.py` with proposed changes applied from outside, to measure them before they are made.

bench.profile_load --variants a,b starts this instead of app.py (BENCH_VARIANTS=a,b); nothing
here is used by the app. Each variant is a stand-in for a change proposed in app code:

- prompt:    smolagents compiles its system prompt template with jinja2 on every run; here
             the compiled template is cached (the rendered prompt is the same).
- nolive:    smolagents renders every streamed token to its (quiet) console: a rich Live and a
             new Markdown parse of the whole text so far per token; here both are no-ops.
- skip:      intermediate updates of a turn leave the textbox, status and session alone
             (gr.skip()) instead of re-sending them; only the chatbot changes.
- nostatus:  the turn event has no status output at all (the chat already shows "Working on
             it"; the 5 s timer keeps the delivery line up to date).
- history:   the chat history is kept in the session on the server and is not an input of
             the turn event, so Gradio does not validate and preprocess it on every turn.
- browserid: the browser id (a gr.BrowserState, only needed when the session is missing) is
             not an input of the turn event either, so the message is its only processed input.
- rawinput:  preprocess=False on the turn event (with history and browserid its only processed
             input is the message, a plain string): no worker-thread hop per input.
- async:     the handler is an async generator fed by one thread per turn that runs the
             (sync) turn to its end, so an update costs one hand-off to the event loop instead
             of a round trip through Gradio's thread pool for every step.
- callback:  the session State's delete_callback is a plain function instead of the bound
             method Runtime.end_session: Gradio puts that object in the page config, deep-copies
             it (the whole Runtime, until something refuses) for every /config and page load,
             and serializes its repr (the settings, one weakref per live session) into it.
- analytics: GRADIO_ANALYTICS_CACHE_FREQUENCY large: Gradio stops rebuilding its pandas
             summary of all recorded events after every event.
- leanspans: OpenInference records no inputs and input messages on its spans (the turn's own
             root keeps the question and answer), so less to encode, store and send.
- notracing: no OpenInference instrumentation at all (only the turn's root span): only to see
             what the agent/step/LLM spans cost; never a proposal.
- switch:    sys.setswitchinterval(0.001): threads waiting for the GIL get it sooner.
- unsafe:    CODE_EXECUTOR=local-unsafe (code in the app process): only to see what the
             worker process costs in time; never a proposal.
- noagent:   the turn keeps its root trace, its answer map and its chat updates (thinking, the
             step, the answer: what the app streams for the scripted model) but runs no agent:
             the floor of moving the agent out of the Gradio process into a worker of its own
             (what such a worker would leave in this process); never a proposal by itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VARIANTS = {v.strip() for v in os.environ.get("BENCH_VARIANTS", "").split(",") if v.strip()}
KNOWN = {
    "prompt",
    "nolive",
    "skip",
    "nostatus",
    "history",
    "browserid",
    "rawinput",
    "async",
    "callback",
    "analytics",
    "leanspans",
    "notracing",
    "switch",
    "unsafe",
    "noagent",
}
if VARIANTS - KNOWN:
    raise SystemExit(f"unknown variants {sorted(VARIANTS - KNOWN)}; known: {sorted(KNOWN)}")

if "analytics" in VARIANTS:
    os.environ["GRADIO_ANALYTICS_CACHE_FREQUENCY"] = "1000000000"
if "unsafe" in VARIANTS:
    os.environ["CODE_EXECUTOR"] = "local-unsafe"
if "switch" in VARIANTS:
    sys.setswitchinterval(0.001)

import gradio as gr  # noqa: E402

import app  # noqa: E402
from agent.session import ChatSession  # noqa: E402
from agent.turn import stream_turn  # noqa: E402
from feedback.sanitize import clean_text  # noqa: E402

if "prompt" in VARIANTS:
    import jinja2
    import smolagents.agents

    @functools.lru_cache(maxsize=64)
    def _compiled(template: str) -> jinja2.Template:
        return jinja2.Template(template, undefined=jinja2.StrictUndefined)

    def populate_template(template: str, variables: dict[str, Any]) -> str:
        try:
            return _compiled(template).render(**variables)
        except Exception as e:  # noqa: BLE001 - smolagents' own message
            raise Exception(f"Error during jinja template rendering: {type(e).__name__}: {e}") from e

    smolagents.agents.populate_template = populate_template

if VARIANTS & {"leanspans", "notracing"}:
    from openinference.instrumentation import TraceConfig
    from openinference.instrumentation.smolagents import SmolagentsInstrumentor

    import feedback.tracing

    def instrument(provider: Any) -> None:
        if "notracing" in VARIANTS:
            return
        SmolagentsInstrumentor().instrument(
            tracer_provider=provider, config=TraceConfig(hide_inputs=True, hide_input_messages=True)
        )

    feedback.tracing.instrument = instrument

if "callback" in VARIANTS:
    state_init = gr.State.__init__

    @functools.wraps(state_init)  # Gradio reads the props from __init__'s signature
    def state_with_plain_callback(self: gr.State, *args: Any, **kwargs: Any) -> None:
        callback = kwargs.get("delete_callback")
        if callback is not None:
            kwargs["delete_callback"] = lambda value: callback(value)
        state_init(self, *args, **kwargs)

    gr.State.__init__ = state_with_plain_callback  # type: ignore[method-assign]

if "nolive" in VARIANTS:
    import contextlib

    import smolagents.agents

    class _NoLive(contextlib.nullcontext):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(self)

        def update(self, *args: Any, **kwargs: Any) -> None:
            return None

    smolagents.agents.Live = _NoLive
    smolagents.agents.Markdown = lambda *args, **kwargs: None

SKIP = "skip" in VARIANTS
NO_STATUS = "nostatus" in VARIANTS
SERVER_HISTORY = "history" in VARIANTS
NO_BROWSER_ID = "browserid" in VARIANTS


def respond(
    self: app.ChatHandlers,
    message: str,
    history: list[dict[str, Any]],
    session: ChatSession | None,
    browser_id: str,
    request: gr.Request = None,  # type: ignore[assignment]
) -> Iterator[tuple[Any, ...]]:
    """app.ChatHandlers.respond with the variants' changes (same checks, same updates)."""
    if not isinstance(browser_id, str):
        browser_id = ""  # "browserid": the session State comes in its place
    session = self._session(session, browser_id, request)
    if SERVER_HISTORY:
        history = getattr(session, "bench_history", [])
    history = list(history or [])

    def out(msg: Any, chat: Any, sess: Any, status: Any) -> tuple[Any, ...]:
        return (msg, chat, sess) if NO_STATUS else (msg, chat, sess, status)

    text = clean_text(message) if isinstance(message, str) else ""
    if not text.strip():
        yield out(gr.update(value="", interactive=True), history, session, self.status())
        return
    limit = self.rt.settings.max_input_chars
    if len(text) > limit:
        note = f"⚠️ Your message has {len(text):,} characters; the limit is {limit:,}."
        gr.Warning(note)
        yield out(gr.update(value=text, interactive=True), history, session, self.status(note))
        return
    locked = gr.update(value="", interactive=False)
    working = "" if NO_STATUS else self.status("Agent is working…")
    first = True
    for update in stream_turn(session, text, history, self.rt.feedback.telemetry, self.rt.metadata()):
        if update.done:
            if SERVER_HISTORY:
                session.bench_history = update.history  # type: ignore[attr-defined]
            status = "" if NO_STATUS else self.status()
            yield out(gr.update(value="", interactive=True), update.history, session, status)
        elif first or not SKIP:
            first = False
            yield out(locked, update.history, session, working)
        else:
            yield out(gr.skip(), update.history, gr.skip(), gr.skip())


def async_turns(sync_respond: Any) -> Any:
    """The handler as an async generator over a thread that runs the sync one to its end."""

    async def respond(
        self: app.ChatHandlers,
        message: str,
        history: list[dict[str, Any]],
        session: ChatSession | None,
        browser_id: str,
        request: gr.Request = None,  # type: ignore[assignment]
    ) -> AsyncIterator[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[Any] = asyncio.Queue()
        end = object()

        def run() -> None:
            try:
                for update in sync_respond(self, message, history, session, browser_id, request):
                    loop.call_soon_threadsafe(updates.put_nowait, update)
            except BaseException as exc:  # noqa: BLE001 - raised again in the handler
                loop.call_soon_threadsafe(updates.put_nowait, exc)
            loop.call_soon_threadsafe(updates.put_nowait, end)

        context = contextvars.copy_context()  # gr.Warning and the request need Gradio's context
        threading.Thread(target=context.run, args=(run,), daemon=True).start()
        while (update := await updates.get()) is not end:
            if isinstance(update, BaseException):
                raise update
            yield update

    return respond


if VARIANTS & {"skip", "nostatus", "history", "browserid", "rawinput", "async"}:
    if VARIANTS & {"skip", "nostatus", "history", "browserid"}:
        app.ChatHandlers.respond = respond  # type: ignore[method-assign]
    if "async" in VARIANTS:
        app.ChatHandlers.respond = async_turns(app.ChatHandlers.respond)  # type: ignore[method-assign]
    build_app = app.build_app

    def build_variant(*args: Any, **kwargs: Any) -> gr.Blocks:
        demo = build_app(*args, **kwargs)
        (turn,) = [fn for fn in demo.fns.values() if getattr(fn, "name", "") == "respond"]
        msg, chatbot, session, browser_id = turn.inputs
        # A State in the place of an input that is no longer one: what the browser sends
        # there is ignored, so the clients need no change.
        turn.inputs = [
            msg,
            session if SERVER_HISTORY else chatbot,
            session,
            session if NO_BROWSER_ID else browser_id,
        ]
        if NO_STATUS:
            turn.outputs = turn.outputs[:3]
        if "rawinput" in VARIANTS:
            turn.preprocess = False
        return demo

    app.build_app = build_variant

if "noagent" in VARIANTS:
    import contextvars

    from agent.steps import as_text
    from agent.turn import THINKING, TurnUpdate, _Trace

    def stream_without_agent(session, message, history, tracer, metadata):  # noqa: ANN001, ANN201
        history = [*history, {"role": "user", "content": as_text(message)}]
        first = len(history)
        session.forget_from(first - 1)
        trace = _Trace(contextvars.Context())
        trace.open(tracer, session, message, metadata)
        trace_id = trace.trace_id
        yield TurnUpdate([*history, {"role": "assistant", "content": THINKING}], trace_id)
        step = {"role": "assistant", "content": "Step 1", "metadata": {"title": "Step 1", "status": "done"}}
        yield TurnUpdate([*history, step, {"role": "assistant", "content": THINKING}], trace_id)
        answer = f"Answer to: {message}"
        trace.call("set_output", answer)
        history = [*history, step, {"role": "assistant", "content": answer}]
        if trace_id:
            session.map_answer(range(first, len(history)), trace_id)
        trace.close()
        yield TurnUpdate(history, trace_id, done=True)

    app.stream_turn = stream_without_agent

if __name__ == "__main__":
    print(f"bench variants: {', '.join(sorted(VARIANTS)) or 'none'}", flush=True)
    sys.exit(app.main())
