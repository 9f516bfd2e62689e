"""Smolagent chat: a Gradio chat over a smolagents CodeAgent whose every answer can be rated.

Each turn is one trace (local store, and Langfuse when keys are set); each like or dislike
becomes a `user-feedback` score on the trace of the answer that was rated. Run: python app.py
"""

from __future__ import annotations

import logging
import math
import os
import re
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
from config.settings import Settings, SettingsError, load_settings
from dashboard.access import Access
from dashboard.ui import DashboardHandlers, build_dashboard, dashboard_link
from evals.judge import Judge
from evals.online import build_evaluation, describe
from feedback.backends import FeedbackBackends
from feedback.sanitize import clean_text
from feedback.store import ScoreRow, StoreError
from feedback.votes import Vote, score_id_for, vote_from_liked
from llms.models import ModelChoice
from runtime.runtime import Runtime, isolation_line
from runtime.runtime import create_runtime as build_runtime
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

COMMENT_NOBODY = "Comment: rate an answer first, then say why here"

# Where the README's settings are read: on a Space its README.md, at the section's anchor (a
# relative link cannot work there: the page runs in an iframe on another domain, *.hf.space).
SPACE_README = "https://huggingface.co/spaces/{space_id}/blob/main/README.md#settings"


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


def model_note(settings: Settings, choice: ModelChoice) -> str:
    """One line saying the bundled offline model is a tiny demo and how to set a capable one
    (Markdown; empty for any other model)."""
    if choice.provider != "local" or settings.local_model_path:
        return ""
    if settings.space_id:
        where = f"[Settings]({SPACE_README.format(space_id=settings.space_id)}) in the README"
    else:
        where = "Settings in README.md"
    return (
        f"🧪 **Tiny demo model**: `{choice.model_id}` runs offline and is often wrong; it shows the "
        f"pipeline (traces, ratings), not a smart agent. For real answers set `HF_TOKEN` or "
        f"`OPENAI_BASE_URL` (see {where})."
    )


# Text Gradio's Markdown would turn into a link: a URL (GFM autolinks any http(s)://, ftp:// or
# www.), an e-mail address, and a `]` opening an inline link, an image, a reference or its
# definition. Each gets a backslash before it, which Markdown shows as nothing.
_LINKABLE = re.compile(r"(?i)(?:https?|ftp)(?=://)|www(?=\.)|(?<=[\w.+-])(?=@[\w-])|\](?=[(\[:])")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TICKS = re.compile(r"`+")


def _escape_links(text: str) -> str:
    return _LINKABLE.sub(lambda m: m.group() + "\\", text)


def _unlink_line(line: str) -> str:
    """One line, its code spans left as they are (a backslash would show inside them)."""
    parts: list[str] = []
    done = start = 0
    while (ticks := _TICKS.search(line, start)) is not None:
        close = re.compile(rf"(?<!`){ticks.group()}(?!`)").search(line, ticks.end())
        if close is None:
            start = ticks.end()
            continue
        parts += [_escape_links(line[done : ticks.start()]), line[ticks.start() : close.end()]]
        done = start = close.end()
    parts.append(_escape_links(line[done:]))
    return "".join(parts)


def unlinked(text: str) -> str:
    """Markdown text in which nothing becomes a link or an image: a link in a chat message comes
    from whoever wrote it (a user, or a model reading a hostile web page), so it is shown as text.

    Shown the same (Markdown drops the backslashes), code blocks and spans untouched, and applying
    it twice changes nothing.
    """
    out: list[str] = []
    fence = ""
    for line in text.splitlines(keepends=True):
        opening = _FENCE.match(line)
        if fence:
            body = line.strip()
            if body and body == body[0] * len(body) and body[0] == fence[0] and len(body) >= len(fence):
                fence = ""
            out.append(line)
        elif opening:
            fence = opening.group(1)
            out.append(line)
        else:
            out.append(_unlink_line(line))
    return "".join(out)


def _unlinked_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    shown = dict(message)
    content = shown.get("content")
    if isinstance(content, str):
        shown["content"] = unlinked(content)
    elif isinstance(content, list):
        shown["content"] = [
            {**part, "text": unlinked(part["text"])}
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
    metadata = shown.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("title"), str):
        shown["metadata"] = {**metadata, "title": unlinked(metadata["title"])}
    return shown


def _md_literal(text: str) -> str:
    """Text shown literally in Markdown: every ASCII punctuation mark escaped (no HTML, no link)."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def answer_groups(history: Any) -> list[int]:
    """The chat index of the first message of each answer group, in order, as Gradio's Chatbot
    groups them (consecutive assistant messages; only user and assistant messages count)."""
    firsts: list[int] = []
    previous = None
    for index, message in enumerate(history if isinstance(history, list) else []):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            continue
        if role == "assistant" and previous != "assistant":
            firsts.append(index)
        previous = role
    return firsts


def shown_vote(row: ScoreRow | None, reasons: tuple[str, ...]) -> str | None:
    """What the page shows for a stored rating: "Like", "Dislike", a dislike reason, or None."""
    if row is None or row.deleted or row.value is None:
        return None
    if row.value >= 1.0:
        return "Like"
    return row.reason if row.reason in reasons else "Dislike"


def _vote_words(shown: str | None) -> str:
    """A shown vote as the user would say it: "👍", "👎" or "👎 (Incorrect)"."""
    if shown is None:
        return "no rating"
    if shown == "Like":
        return "👍"
    return "👎" if shown == "Dislike" else f"👎 ({shown})"


BEING_WRITTEN = "the answer being written"


class RatingsView:
    """What the page says about a chat's ratings, always read from the store: each answer's
    thumb, which answer a comment goes to, and what a vote did."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.rt.settings.feedback_options

    def of_chat(self, session: ChatSession) -> dict[str, ScoreRow | None]:
        """The stored rating of each answer of this chat, by trace id, in chat order."""
        traces = dict.fromkeys(trace for _index, trace in sorted(session.answer_traces.items()))
        store = self.rt.feedback.store
        return {trace: store.get_score(score_id_for(trace)) for trace in traces}

    def shown(self, trace_id: str) -> str | None:
        return shown_vote(self.rt.feedback.store.get_score(score_id_for(trace_id)), self.reasons)

    def thumbs(
        self, session: ChatSession, history: Any, rows: dict[str, ScoreRow | None]
    ) -> list[str | None]:
        """Gradio's feedback_value for this chat: the shown vote of each answer group."""
        return [
            shown_vote(rows.get(trace), self.reasons) if (trace := session.trace_for(first)) else None
            for first in answer_groups(history)
        ]

    def answer(self, session: ChatSession, trace_id: str) -> str:
        """Which answer, in plain text: the answer to “What is 2+2?”."""
        store = self.rt.feedback.store
        try:
            trace = store.get_trace(trace_id)
            if trace is None and not session.lock.locked():
                # The turn has ended; its trace may still wait in the span exporter's batch.
                self.rt.feedback.telemetry.flush_to_store()
                trace = store.get_trace(trace_id)
        except StoreError:
            trace = None
        question = _snippet((trace or {}).get("input") or "")
        if question:
            return f"the answer to “{question}”"
        # A turn's trace is written when it ends.
        return BEING_WRITTEN if session.lock.locked() else "this answer"

    def comment_target(
        self, session: ChatSession | None, rows: dict[str, ScoreRow | None] | None = None
    ) -> tuple[str, str] | None:
        """(trace id, shown vote) of the answer a comment goes to: the one rated last, or if
        that rating was undone, the most recently rated answer still showing a rating."""
        if not isinstance(session, ChatSession):
            return None
        live = {
            trace: (row, shown)
            for trace, row in (self.of_chat(session) if rows is None else rows).items()
            if row is not None and (shown := shown_vote(row, self.reasons)) is not None
        }
        if not live:
            return None
        trace = session.last_rated_trace
        if trace not in live:
            trace = max(live, key=lambda t: live[t][0].updated)
        return trace, live[trace][1]

    def comment_label(self, session: ChatSession, rows: dict[str, ScoreRow | None] | None = None) -> str:
        """The comment box's label (plain text): which answer a comment goes to."""
        target = self.comment_target(session, rows)
        if target is None:
            return COMMENT_NOBODY
        trace, shown = target
        return f"Comment on your {_vote_words(shown)} of {self.answer(session, trace)}"

    def vote_sentence(self, session: ChatSession, trace_id: str, before: str | None, vote: Vote) -> str:
        """What a vote did, for the status line (Markdown; the question shown literally)."""
        plain = self.answer(session, trace_id)
        answer = _md_literal(plain)
        if vote.value is None:
            if before is None:
                return f"{answer[0].upper()}{answer[1:]} has no rating."
            return f"Rating removed from {answer}."
        if vote.value >= 1.0:
            now = "Like"
        else:
            now = vote.reason if vote.reason in self.reasons else "Dislike"
        words = _md_literal(_vote_words(now))
        if vote.reason and vote.reason not in self.reasons:
            words = "👎 \\(with a reason\\)"
        changed = before is not None and (before == "Like") != (now == "Like")
        sentence = f"Rating changed to {words} on {answer}." if changed else f"Saved {words} on {answer}."
        if plain == BEING_WRITTEN:
            sentence += " It stays on the answer when it is finished."
        if now == "Dislike" and not vote.reason:
            sentence += " Say why with ⚑ next to it, or in the comment box."
        return sentence


def _page_click(click: object) -> bool:
    """A vote numbered by the page (a person's click), not an API caller's."""
    return isinstance(click, (int, float)) and not isinstance(click, bool) and math.isfinite(click)


class ChatHandlers:
    """Thin Gradio handlers over agent/ and feedback/; all per-user data is in gr.State."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.ratings = RatingsView(runtime)

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
        session = self.rt.session_for(_user_id(browser_id, profile), _hash(request))
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
        history = list(history or [])
        text = clean_text(message) if isinstance(message, str) else ""
        if not text.strip():
            yield gr.update(value="", interactive=True), history, session, self.status()
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
        locked = gr.update(value="", interactive=False)
        # The status line is set when the turn starts (clearing a refusal or a vote's sentence)
        # and sent again at the end only if the turn changed it. Each output sent costs Gradio a
        # thread hop per user under load, and the chat already says the agent is working.
        before = self.status()
        final = None
        # After the first update only the chat changes: the box, the session and the status
        # are skipped (each would be post-processed and diffed again, for every user, under load).
        first = True
        with self.rt.turns:
            for update in stream_turn(session, text, history, self.rt.feedback.telemetry, self.rt.metadata()):
                if update.done:
                    final = update
                elif first:
                    first = False
                    # The status line may still show why an earlier message was refused.
                    yield locked, update.history, session, before
                else:
                    yield gr.skip(), update.history, gr.skip(), gr.skip()
        status = self.status()
        # After the status is read: the evaluators' scheduler wakes up and takes the CPU a while.
        self.rt.feedback.wake_evaluation()
        if final is not None:
            changed = status if status != before else gr.skip()
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
                chat = chat[:start] + [_unlinked_message(m) for m in chat[start:]]
            yield box, chat, state, status

    def on_vote(
        self, session: ChatSession | None, data: gr.LikeData, click: float | None = None
    ) -> tuple[ChatSession | None, str]:
        if not isinstance(session, ChatSession):
            log.warning("Vote ignored: this browser session has no chat yet")
            return session, self.status()
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
        answer = _md_literal(self.ratings.answer(session, trace))
        if row is None:  # undone between the two reads
            return text, session, self.status(f"The rating of {answer} was just removed; rate it again.")
        words = _md_literal(_vote_words(shown))
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
        fresh = self.rt.new_session(user_id or _user_id(browser_id, None), _hash(request))
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
        gr.Markdown(
            f"## Smolagent chat\nA smolagents CodeAgent ({runtime.choice.provider}: "
            f"`{runtime.choice.model_id}`). Rate answers with 👍 / 👎; every rating is stored."
        )
        note = model_note(settings, runtime.choice)
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
    print(runtime.choice.banner(), flush=True)
    print(isolation_line(runtime), flush=True)
    print(runtime.feedback.check_langfuse(), flush=True)
    for line in runtime.feedback.store_lines(settings):
        print(line, flush=True)
    print(describe(runtime.feedback.evaluation, settings), flush=True)
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
