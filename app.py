"""Smolagent chat: a Gradio chat over a smolagents CodeAgent whose every answer can be rated.

Each turn is one trace (local store, and Langfuse when keys are set); each like or dislike
becomes a `user-feedback` score on the trace of the answer that was rated. Run: python app.py
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from smolagents import Model, Tool

from agent.agent_process import AgentProcessError
from agent.session import ChatSession, close_session
from agent.turn import stream_turn
from chat.markdown import md_literal, unlinked_message
from chat.model_note import model_note
from chat.ratings import COMMENT_NOBODY, RatingsView, vote_words
from config.settings import Settings, SettingsError, load_settings
from dashboard.access import Access, oauth_is_real
from dashboard.ui import DashboardHandlers, build_dashboard, dashboard_link
from evals.judge import Judge
from evals.online import build_evaluation, describe
from feedback.backends import FeedbackBackends
from feedback.otlp import describe as describe_otlp
from feedback.sanitize import clean_text
from feedback.store import StoreError
from feedback.votes import Vote, vote_from_liked
from runtime.runtime import Runtime, isolation_line
from runtime.runtime import create_runtime as build_runtime
from runtime.visitors import visitor_key
from sandbox.confine import set_dumpable
from sandbox.executor import SandboxError

log = logging.getLogger("app")

BROWSER_ID_KEY = "smolagent-chat-browser-id"


def create_runtime(
    settings: Settings,
    *,
    model: Model | None = None,
    extra_tools: list[Tool] | None = None,
    judge: Judge | None = None,
) -> Runtime:
    """The app's runtime with its online evaluation; `model`, `extra_tools` and `judge` let tests
    and embedders pass their own."""

    def evaluation(settings: Settings, feedback: FeedbackBackends, busy: Callable[[], bool]) -> Any:
        return build_evaluation(settings, feedback, busy=busy, judge=judge)

    return build_runtime(settings, model=model, extra_tools=extra_tools, evaluation=evaluation)


def _browser_secret(data_dir: Path) -> str:
    """A per-install secret, so the anonymous browser id survives app restarts."""
    path = data_dir / "browser_state_secret"
    try:
        return path.read_text().strip()
    except OSError:
        value = secrets.token_urlsafe(24)
    try:
        # With DATABASE_URL nothing else creates DATA_DIR.
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
    except OSError as exc:
        log.warning(
            "Cannot keep the browser-id secret in %s (%s); browser ids last until a restart", path, exc
        )
    return value


def _hash(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _user_id(browser_id: str, profile: gr.OAuthProfile | None) -> str:
    if profile is not None and getattr(profile, "username", None):
        return str(profile.username)
    return f"anon-{browser_id}"


# Numbers the page's vote clicks in the order they are made (the session state stays server-side).
VOTE_CLICK_JS = "(session, click) => [session, (window.__voteClicks = (window.__voteClicks || 0) + 1)]"

# The filled thumb-down Gradio draws for "Disliked" (gradio 6.31), for a dislike given with a reason.
_DISLIKED_PATH = (
    "M11.25 6.61523H9.375V1.36523H11.25V6.61523ZM3.375 1.36523H8.625V6.91636L7.48425 8.62748L7.16737 "
    "10.8464C7.14108 11.0248 7.05166 11.1879 6.91535 11.3061C6.77904 11.4242 6.60488 11.4896 6.4245 "
    "11.4902H6.375C6.07672 11.4899 5.79075 11.3713 5.57983 11.1604C5.36892 10.9495 5.2503 10.6635 5.25 "
    "10.3652V8.11523H2.25C1.85233 8.11474 1.47109 7.95654 1.18989 7.67535C0.908691 7.39415 0.750496 "
    "7.01291 0.75 6.61523V3.99023C0.750992 3.29435 1.02787 2.62724 1.51994 2.13517C2.01201 1.64311 "
    "2.67911 1.36623 3.375 1.36523Z"
)
# Gradio highlights only the flag when a dislike reason is picked, the thumb goes back to
# unpressed; a dislike with a reason is still a dislike, so its thumb stays pressed.
PAGE_CSS = f"""
#chat .message-buttons:has(.extra-feedback-option[style*="bold"]) button[aria-label="Dislike"] {{
  color: var(--color-accent) !important;
}}
#chat .message-buttons:has(.extra-feedback-option[style*="bold"]) button[aria-label="Dislike"] svg path {{
  d: path("{_DISLIKED_PATH}");
}}
"""
# Gradio's footer links lead nowhere useful here: "Use via API" lists endpoints that cannot rate
# (a vote needs the page), "Settings" is Gradio's theme and language panel (not this app's
# settings), "Runs" keeps every message typed in the browser's storage and shows this app's
# inputs as "[object Object]". Only "Built with Gradio" stays; run history is off.
FOOTER_LINKS: list[Any] = ["gradio"]


class ChatBlocks(gr.Blocks):
    """The chat's Blocks: however it is launched (python app.py, a Space, tests, an embedder),
    the page gets its own CSS and footer, and Gradio keeps no run history in the browser."""

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["css"] = PAGE_CSS + (kwargs.get("css") or "")
        if kwargs.get("footer_links") is None:
            kwargs["footer_links"] = FOOTER_LINKS
        if kwargs.get("run_history") is None:
            kwargs["run_history"] = False
        return super().launch(*args, **kwargs)


def _page_click(click: object) -> bool:
    """A vote numbered by the page (a person's click), not an API caller's."""
    return isinstance(click, (int, float)) and not isinstance(click, bool) and math.isfinite(click)


class ChatHandlers:
    """Thin Gradio handlers over agent/ and feedback/; all per-user data is in gr.State."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.ratings = RatingsView(runtime)
        # A signed-in HF user counts as themself only where the login is real (on a Space).
        self.oauth_real = oauth_is_real()

    def visitor(self, request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> str:
        """Whom the per-user limits count (runtime.visitors)."""
        return visitor_key(request, profile, self.rt.settings.trusted_proxy_hops, self.oauth_real)

    def status(self, extra: str = "") -> str:
        parts = [p for p in (extra, self.rt.model_health(), self.rt.feedback.waiting_line()) if p]
        return " · ".join(parts)

    def on_load(
        self,
        browser_id: str,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> tuple[str, ChatSession, str]:
        try:
            browser_id = str(uuid.UUID(str(browser_id)))
        except ValueError:
            browser_id = str(uuid.uuid4())
        # The tab's session may already exist: a first message can make it before this runs.
        # It is never told the browser id it was made with (whoever knows a tab's session hash
        # must not learn the browser's lasting id): on a first visit the two ids can differ.
        session = self.rt.session_for(
            _user_id(browser_id, profile), _hash(request), self.visitor(request, profile)
        )
        return browser_id, session, self.status()

    def _session(
        self,
        session: ChatSession | None,
        browser_id: str,
        request: gr.Request | None,
        profile: gr.OAuthProfile | None = None,
    ) -> ChatSession:
        if isinstance(session, ChatSession):
            return session
        return self.on_load(browser_id, request, profile)[1]

    def respond(
        self,
        message: str,
        history: list[dict[str, Any]],
        session: ChatSession | None,
        browser_id: str,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,  # injected by Gradio on a Space with HF sign-in
    ) -> Iterator[tuple[Any, list[dict[str, Any]], ChatSession, str]]:
        session = self._session(session, browser_id, request, profile)
        visitor = self.visitor(request, profile)
        note = ""
        if session.closed_reason:
            # Closed for its visitor's limit of open chats: this message starts a new one.
            note = session.closed_reason
            session = self.rt.session_for(session.user_id, _hash(request), visitor)
        history = list(history or [])
        text = clean_text(message) if isinstance(message, str) else ""
        if not text.strip():
            yield gr.update(value="", interactive=True), history, session, self.status(note)
            return
        limit = self.rt.settings.max_input_chars
        if len(text) > limit:
            note = (
                f"⚠️ Your message has {len(text):,} characters; the limit is {limit:,}. "
                "It was not sent: please shorten it."
            )
            gr.Warning(note)
            # The text stays in the box, so nothing the user typed is lost.
            yield gr.update(value=text, interactive=True), history, session, self.status(note)
            return
        refusal = self.rt.visitors.start_turn(visitor) if self.rt.visitors is not None else None
        if refusal is not None:
            # Not a turn: nothing is traced, and the text stays in the box to send again.
            log.info("Turn refused for %s: %s", visitor, refusal)
            gr.Warning(refusal)
            yield gr.update(value=text, interactive=True), history, session, self.status(refusal)
            return
        try:
            yield from self._turn(session, text, history, note)
        finally:
            if self.rt.visitors is not None:
                self.rt.visitors.end_turn(visitor)

    def _turn(
        self, session: ChatSession, text: str, history: list[dict[str, Any]], note: str
    ) -> Iterator[tuple[Any, list[dict[str, Any]], ChatSession, str]]:
        if self.rt.visitors is not None and session.visitor:
            self.rt.visitors.touch(session.visitor, session)
        locked = gr.update(value="", interactive=False)
        # The status line is set when the turn starts (clearing a refusal or a vote's sentence)
        # and sent again at the end only if the turn changed it. Each output sent costs Gradio a
        # thread hop per user under load, and the chat already says the agent is working.
        before = self.status(note)
        final = None
        # After the first update only the chat changes: the box, the session and the status
        # are skipped (each would be post-processed and diffed again, for every user, under load).
        first = True
        with self.rt.turns:
            for update in stream_turn(
                session, text, history, self.rt.feedback.telemetry, self.rt.metadata(session)
            ):
                if update.done:
                    final = update
                elif first:
                    first = False
                    # The status line may still show why an earlier message was refused.
                    yield locked, update.history, session, before
                else:
                    yield gr.skip(), update.history, gr.skip(), gr.skip()
        status = self.status(note)
        # After the status is read: the evaluators' scheduler wakes up and takes the CPU a while.
        self.rt.feedback.wake_evaluation()
        if final is not None:
            # A note (the chat was closed and started again) is sent again: it must stay.
            changed = status if status != before or note else gr.skip()
            yield gr.update(value="", interactive=True), final.history, session, changed

    def page_respond(
        self,
        message: str,
        history: list[dict[str, Any]],
        session: ChatSession | None,
        browser_id: str,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,  # injected by Gradio on a Space with HF sign-in
    ) -> Iterator[tuple[Any, Any, Any, Any]]:
        """`respond` as the page shows it: the turn's messages with nothing turned into a link
        (the traces keep exactly what was written)."""
        start = len(history) if isinstance(history, list) else 0
        for box, chat, state, status in self.respond(message, history, session, browser_id, request, profile):
            if isinstance(chat, list):
                chat = chat[:start] + [unlinked_message(m) for m in chat[start:]]
            yield box, chat, state, status

    def on_vote(
        self, session: ChatSession | None, data: gr.LikeData, click: float | None = None
    ) -> tuple[ChatSession | None, str]:
        if not isinstance(session, ChatSession):
            log.warning("Vote ignored: this browser session has no chat yet")
            return session, self.status()
        if session.closed_reason:
            return session, self.status(session.closed_reason)
        if not isinstance(getattr(data, "_data", None), dict) or "liked" not in data._data:
            # The browser always says what was clicked; Gradio would read a missing value as a like.
            log.warning("Vote ignored: the event does not say like or dislike")
            return session, self.status()
        trace_id = session.trace_for(data.index)
        if trace_id is None:
            log.warning(
                "Vote ignored: chat index %r of session %s is not an answer",
                data.index,
                session.session_id,
            )
            return session, self.status("That message is not an answer, so it cannot be rated.")
        try:
            vote = vote_from_liked(data.liked)
        except ValueError:
            log.warning("Vote ignored: unknown value %r", data.liked)
            return session, self.status()
        if not session.newer_click(trace_id, click):
            # Sent before the click already applied: the page shows the later one.
            log.info("Vote ignored: click %r on trace %s arrived after a later click", click, trace_id)
            return session, self.status()
        try:
            before = self.ratings.shown(trace_id)
            if _page_click(click) and vote == Vote(0.0) and before not in (None, "Like", "Dislike"):
                # The page shows a dislike with a reason as a pressed 👎 (PAGE_CSS), but Gradio
                # sends a click on it as a plain dislike: like any pressed thumb, it undoes.
                vote = Vote(None)
            self.rt.feedback.votes.record(
                trace_id=trace_id, vote=vote, session_id=session.session_id, user_id=session.user_id
            )
        except StoreError as exc:
            log.exception("Could not save a vote on trace %s", trace_id)
            return session, self.status(
                f"⚠️ Your rating could not be saved ({exc.reason}). Please click again."
            )
        session.last_rated_trace = trace_id if vote.value is not None else session.last_rated_trace
        status = self.status(self.ratings.vote_sentence(session, trace_id, before, vote))
        self.rt.feedback.wake_evaluation()  # after the status: the scheduler then takes the CPU
        return session, status

    def show_ratings(self, session: ChatSession | None, history: Any) -> tuple[Any, Any]:
        """The page after a vote or a new chat: each answer's thumb as stored (the Chatbot's
        feedback_value, one per answer group) and the comment box saying where a comment goes.

        Gradio redraws every thumb from feedback_value whenever the chat changes (a new message,
        a streamed step): without it a vote vanished from the page at the next update, while
        the store kept it.
        """
        if not isinstance(session, ChatSession):
            return gr.update(feedback_value=[]), gr.update(label=COMMENT_NOBODY)
        try:
            rows = self.ratings.of_chat(session)
            thumbs = self.ratings.thumbs(session, history, rows)
            label = self.ratings.comment_label(session, rows)
        except StoreError as exc:
            log.warning("Cannot read this chat's ratings: %s", exc)
            return gr.skip(), gr.skip()
        return gr.update(feedback_value=thumbs), gr.update(label=label)

    def on_comment(self, text: str, session: ChatSession | None) -> tuple[str, ChatSession | None, str]:
        """Free text for the rating the comment box names (RatingsView.comment_target), never
        for a rating the page no longer shows."""
        text = clean_text(text) if isinstance(text, str) else ""
        if not text.strip():
            return "", session, self.status()
        try:
            target = self.ratings.comment_target(session)
            if target is None or not isinstance(session, ChatSession):
                return text, session, self.status("Rate an answer first; the comment goes with your rating.")
            trace, shown = target
            row = self.rt.feedback.votes.comment(trace_id=trace, text=text)
        except StoreError as exc:
            log.exception("Could not save a comment")
            return (
                text,
                session,
                self.status(f"⚠️ Your comment could not be saved ({exc.reason}). Please try again."),
            )
        answer = md_literal(self.ratings.answer(session, trace))
        if row is None:  # undone between the two reads
            return text, session, self.status(f"The rating of {answer} was just removed; rate it again.")
        words = md_literal(vote_words(shown))
        return "", session, self.status(f"Comment saved with your {words} of {answer}.")

    def on_new_chat(
        self,
        session: ChatSession | None,
        browser_id: str,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
    ) -> tuple[list[Any], ChatSession, Any, str]:
        user_id = session.user_id if isinstance(session, ChatSession) else None
        if isinstance(session, ChatSession):
            close_session(session)
            if self.rt.visitors is not None:
                self.rt.visitors.forget_session(session.visitor, session)
        fresh = self.rt.new_session(
            user_id or _user_id(browser_id, None), _hash(request), self.visitor(request)
        )
        return [], fresh, gr.update(value="", interactive=True), self.status()


def _session_ender(runtime: Runtime) -> Any:
    def end_session(session: object) -> None:
        runtime.end_session(session)

    return end_session


def build_app(
    settings: Settings | None = None, *, model: Model | None = None, runtime: Runtime | None = None
) -> gr.Blocks:
    """Build the Blocks app (tests call this; `main()` launches it)."""
    if runtime is None:
        runtime = create_runtime(settings or load_settings(), model=model)
    settings = runtime.settings
    handlers = ChatHandlers(runtime)
    options = ["Like", "Dislike", *[o for o in settings.feedback_options if o not in ("Like", "Dislike")]]
    # After every queued event Gradio rebuilds a pandas summary of up to 10,000 past events for
    # its /monitoring page, which this app does not enable: 2 to 9 ms per event under the GIL.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(10**9))
    dashboard = DashboardHandlers(runtime.feedback.store, settings, Access(settings))
    with ChatBlocks(title="Smolagent chat") as demo:
        demo.runtime = runtime  # type: ignore[attr-defined]

        def forget_gradio_session(session_hash: str) -> None:
            # Gradio keeps a per-session copy of the page config until 10,000 sessions have
            # been seen; once our session expired nothing in it is needed, so memory stays flat.
            holder = getattr(demo, "state_holder", None)
            if holder is not None:
                with holder.lock:
                    holder.session_data.pop(session_hash, None)
                    holder.time_last_used.pop(session_hash, None)
            queue = getattr(demo, "_queue", None)
            if queue is not None and not queue.pending_event_ids_session.get(session_hash):
                queue.pending_messages_per_session.pop(session_hash, None)

        runtime.forget_gradio_session = forget_gradio_session
        if os.environ.get("OAUTH_CLIENT_ID"):
            # On a Space with `hf_oauth: true`: logged-in users are recorded by their HF name.
            gr.LoginButton()
        # In an A/B experiment the page is the same for every variant: it names no model.
        model = (
            f" ({runtime.choice.provider}: `{runtime.choice.model_id}`)"
            if settings.experiment is None
            else ""
        )
        gr.Markdown(
            f"## Smolagent chat\nA smolagents CodeAgent{model}. Rate answers with 👍 / 👎; every rating is stored."
        )
        note = model_note(settings, runtime.choice) if settings.experiment is None else ""
        if note:
            gr.Markdown(note, elem_id="model-note")
        chatbot = gr.Chatbot(
            label="Agent", feedback_options=options, height=520, elem_id="chat", buttons=["copy"]
        )
        msg = gr.Textbox(
            placeholder="Ask the agent… (Enter to send)", show_label=False, elem_id="msg", lines=1
        )
        with gr.Row():
            comment = gr.Textbox(
                label=COMMENT_NOBODY,
                placeholder="Optional: why? (it goes with that rating)",
                elem_id="comment",
                scale=4,
            )
            comment_btn = gr.Button("Add comment", scale=1, elem_id="comment-btn")
            new_chat = gr.Button("New chat", scale=1, elem_id="new-chat")
        status = gr.Markdown("", elem_id="status")
        session = gr.State(
            None,
            time_to_live=settings.session_ttl_s,
            # A plain function: Gradio deep-copies this callback into every page's config and
            # shows its repr; a bound method would put the whole runtime (settings included) there.
            delete_callback=_session_ender(runtime),
        )
        browser_id = gr.BrowserState(
            "", storage_key=BROWSER_ID_KEY, secret=_browser_secret(settings.data_dir)
        )

        demo.load(handlers.on_load, [browser_id], [browser_id, session, status], queue=False)
        msg.submit(
            handlers.page_respond,
            [msg, chatbot, session, browser_id],
            [msg, chatbot, session, status],
            api_name="respond",
            concurrency_limit=settings.max_concurrent_turns,
            concurrency_id="turns",
            # The inputs arrive validated (the chat against Gradio's message model, files checked
            # against the upload folder) and serialized, which is what the components' own
            # preprocess would hand over too; skipping it saves a thread hop per input per turn
            # (3 waits for a worker thread and the GIL under load).
            preprocess=False,
        )
        # Every click is sent ("multiple": the default "once" drops clicks made while one is
        # pending) and votes and comments run one at a time in arrival order; a click that
        # arrives after a later one is stale (numbered below), so the stored state is always
        # the last click. A vote takes well under a millisecond.
        vote_queue: dict[str, Any] = {
            "concurrency_limit": 1,
            "concurrency_id": "votes",
            "trigger_mode": "multiple",
        }
        # Each click is numbered in the page, so a click overtaken on the way by a later one is
        # recognised as stale (two HTTP requests sent a millisecond apart can arrive either way).
        vote_click = gr.Number(value=0, visible=False, elem_id="vote-click")
        # After a vote (and a new chat) the page is given the stored state of every answer: its
        # thumbs, and which answer a comment goes to. In the votes' queue, so it runs after the
        # vote it follows; the chat is an input only for where its answer groups are.
        shown: dict[str, Any] = {
            "fn": handlers.show_ratings,
            "inputs": [session, chatbot],
            "outputs": [chatbot, comment],
            "preprocess": False,
            "show_progress": "hidden",
            "api_visibility": "private",
            **vote_queue,
        }
        chatbot.like(
            handlers.on_vote,
            [session, vote_click],
            [session, status],
            js=VOTE_CLICK_JS,
            **vote_queue,
        ).then(**shown)
        for trigger in (comment.submit, comment_btn.click):
            trigger(handlers.on_comment, [comment, session], [comment, session, status], **vote_queue)
        # The chatbot's own clear (trash) button starts a new chat too, so no stale map survives.
        for trigger in (new_chat.click, chatbot.clear):
            trigger(
                handlers.on_new_chat,
                [session, browser_id],
                [chatbot, session, msg, status],
                concurrency_limit=None,
            ).then(**shown)
        if runtime.feedback.outbox is not None:
            gr.Timer(5.0).tick(handlers.status, None, status, concurrency_limit=None, show_progress="hidden")
        # Shown only to whoever may open the dashboard (the owner on this machine, an admin).
        dashboard_link(demo, dashboard)
    # The owner's dashboard: a page of its own (/dashboard); every handler checks the caller.
    build_dashboard(demo, dashboard)
    return demo


def _warm_up(runtime: Runtime) -> None:
    try:
        runtime.make_agent.warm_up()
    except Exception:  # noqa: BLE001 - the first question will load the model instead
        log.exception("Could not warm the model up; the first answer will be slower")


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        runtime = create_runtime(settings)
    except SettingsError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    except (StoreError, SandboxError, AgentProcessError) as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 1
    # /proc/<this pid>/environ and memory are closed to other processes of the same user.
    set_dumpable(False)
    for line in runtime.banner():
        print(line, flush=True)
    print(isolation_line(runtime), flush=True)
    print(runtime.feedback.check_langfuse(), flush=True)
    for line in runtime.feedback.destination_lines():
        print(line, flush=True)
    print(describe_otlp(settings), flush=True)
    for line in runtime.feedback.store_lines(settings):
        print(line, flush=True)
    print(describe(runtime.feedback.evaluation, settings), flush=True)
    if runtime.visitors is not None:
        print(runtime.visitors.describe(), flush=True)
    demo = build_app(runtime=runtime)
    threading.Thread(target=_warm_up, args=(runtime,), name="model-warm-up", daemon=True).start()

    def _terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        demo.queue(default_concurrency_limit=settings.max_concurrent_turns).launch(
            server_name=settings.server_name, server_port=settings.server_port
        )
    except KeyboardInterrupt:
        pass
    finally:
        print("Flushing pending traces and ratings…", flush=True)
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
