"""What the page says about a chat's ratings, always read from the store.

Gradio resets every thumb whenever the chat changes (a vote clicked while an answer streams, or
on an older answer, would vanish from the page although it is stored), so the page redraws each
answer's thumb from here after every vote and every update.
"""

from __future__ import annotations

from typing import Any

from agent.session import ChatSession
from chat.markdown import md_literal, snippet
from feedback.store import ScoreRow, StoreError
from feedback.votes import Vote, score_id_for
from runtime.runtime import Runtime

COMMENT_NOBODY = "Comment: rate an answer first, then say why here"


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


def vote_words(shown: str | None) -> str:
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
        question = snippet((trace or {}).get("input") or "")
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
        return f"Comment on your {vote_words(shown)} of {self.answer(session, trace)}"

    def vote_sentence(self, session: ChatSession, trace_id: str, before: str | None, vote: Vote) -> str:
        """What a vote did, for the status line (Markdown; the question shown literally)."""
        plain = self.answer(session, trace_id)
        answer = md_literal(plain)
        if vote.value is None:
            if before is None:
                return f"{answer[0].upper()}{answer[1:]} has no rating."
            return f"Rating removed from {answer}."
        if vote.value >= 1.0:
            now = "Like"
        else:
            now = vote.reason if vote.reason in self.reasons else "Dislike"
        words = md_literal(vote_words(now))
        if vote.reason and vote.reason not in self.reasons:
            words = "👎 \\(with a reason\\)"
        changed = before is not None and (before == "Like") != (now == "Like")
        sentence = f"Rating changed to {words} on {answer}." if changed else f"Saved {words} on {answer}."
        if plain == BEING_WRITTEN:
            sentence += " It stays on the answer when it is finished."
        if now == "Dislike" and not vote.reason:
            sentence += " Say why with ⚑ next to it, or in the comment box."
        return sentence
