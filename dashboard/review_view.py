"""What a reviewer sees: the item to label (before) and the judges' verdicts (after).

Before labelling: the conversation so far, the question, the answer and the agent's steps, and
nothing anyone scored: no judge's score, no user's thumb, not even why the item is in the queue
(a reason such as "helpfulness 0.9 from the judge vs the user's dislike" would anchor the label).
After the reviewer saved: their labels next to each judge's score and reasoning, the user's
rating and the reason the item was queued. Everything shown was written by a user or a model:
it goes through trace_view's escaping (text only, inside elements).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dashboard.trace_view import (
    TRACE_CSS,
    TraceData,
    load_trace,
    message_html,
    pre_html,
    score_value_text,
    scored_by,
    steps_html,
    text_html,
)
from feedback.review_queue import ReviewItem
from feedback.store import BY_REVIEWER, Store, chat_turn_sql

__all__ = ["EARLIER_TURNS", "REVIEW_CSS", "item_html", "progress_markdown", "reveal_html"]

# Earlier turns of the conversation shown above the answer (the latest ones).
EARLIER_TURNS = 8
TURN_CHARS = 4_000

REVIEW_CSS = """
<style>
#rv-labels .rv-current { outline: 2px solid #6366f1; outline-offset: 2px; border-radius: 8px; }
.rv .rv-turn { border-left: 3px solid rgba(127,127,127,.35); padding-left: 8px; margin: 6px 0; }
.rv .rv-who { font-size: 12px; color: #6b7280; }
.rv .rv-answer pre { border: 2px solid #6366f1; }
.rv table.rv-reveal { border-collapse: collapse; width: 100%; }
.rv table.rv-reveal th, .rv table.rv-reveal td { border-bottom: 1px solid rgba(127,127,127,.2);
  padding: 4px 6px; text-align: left; vertical-align: top; }
</style>
"""


def _earlier(store: Store, trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    session = trace.get("session_id")
    if not session or trace.get("start_time") is None:
        return []
    rows = store.rows(
        f"""SELECT input, output FROM traces WHERE session_id = :s AND start_time < :t AND {chat_turn_sql()}
            ORDER BY start_time DESC LIMIT :n""",
        {"s": session, "t": trace["start_time"], "n": EARLIER_TURNS},
    )
    return list(reversed(rows))


def item_html(store: Store, item: ReviewItem, position: str = "") -> str:
    """The item to label: conversation, question, answer, steps; no score of any kind."""
    data = load_trace(store, item.trace_id)
    if data is None:
        return message_html(
            f"The trace {item.trace_id} of this item is not in the store any more; skip it (s)."
        )
    t = data.trace
    parts = [TRACE_CSS, REVIEW_CSS, '<div class="tv rv" id="rv-trace">']
    head = f"Queue <b>{text_html(item.queue)}</b>"
    if position:
        head += f" · {text_html(position)}"
    parts.append(f"<p>{head} · trace <code>{text_html(item.trace_id)}</code></p>")
    earlier = _earlier(store, t)
    if earlier:
        parts.append(
            f"<h3>The conversation before ({len(earlier)} earlier turn{'s' if len(earlier) != 1 else ''})</h3>"
        )
        for turn in earlier:
            parts.append(
                '<div class="rv-turn"><div class="rv-who">user</div>'
                f"{pre_html(str(turn.get('input') or '')[:TURN_CHARS])}"
                '<div class="rv-who">assistant</div>'
                f"{pre_html(str(turn.get('output') or '')[:TURN_CHARS])}</div>"
            )
    parts.append(f"<h3>Question</h3>{pre_html(t.get('input') or '')}")
    answer = t.get("output") or "(no answer)"
    parts.append(f'<h3>Answer</h3><div class="rv-answer">{pre_html(answer)}</div>')
    if t.get("status") == "ERROR":
        parts.append(
            f"<p class='tv-err'>The turn ended in an error: {text_html(t.get('status_message') or '')}</p>"
        )
    parts.append(steps_html(data))
    parts.append("</div>")
    return "".join(parts)


def _judges(data: TraceData) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in data.scores:
        if row.get("source") == "EVAL" and not row.get("conversation"):
            out.setdefault(str(row.get("name")), []).append(row)
    return out


def reveal_html(store: Store, trace_id: str, reason: str | None, labelled: Sequence[str]) -> str:
    """After saving: each label next to the judges' score of that name, then the user's rating
    and why the item was in the queue (shown only now, so the label was not anchored)."""
    data = load_trace(store, trace_id)
    if data is None:
        return ""
    judges = _judges(data)
    labels = {
        str(r.get("name")): r
        for r in data.scores
        if r.get("scored_by") == BY_REVIEWER and not r.get("conversation")
    }
    names = list(dict.fromkeys([*labelled, *labels, *judges]))
    rows = []
    for name in names:
        label = labels.get(name)
        verdicts = judges.get(name, [])
        judged = "; ".join(f"{score_value_text(v)} ({scored_by(v)})" for v in verdicts) or "not judged"
        reasoning = " ".join(str(v.get("reasoning") or v.get("note") or "") for v in verdicts).strip()
        rows.append(
            f"<tr><td>{text_html(name)}</td><td>{text_html(score_value_text(label) if label else '-')}</td>"
            f"<td>{text_html(judged)}</td><td>{text_html(reasoning, 2000)}</td></tr>"
        )
    rating = next(
        (r for r in data.scores if r.get("name") == "user-feedback" and r.get("source") == "user"), None
    )
    thumb = "not rated"
    if rating is not None:
        thumb = score_value_text(rating) + (f" ({rating['reason']})" if rating.get("reason") else "")
    question = str(data.trace.get("input") or "")[:120]
    table = (
        '<table class="rv-reveal"><tr><th>Score</th><th>Your label</th><th>Judge</th><th>Judge\'s reasoning</th></tr>'
        + "".join(rows)
        + "</table>"
        if rows
        else "<p class='tv-note'>No judge scored this answer.</p>"
    )
    return (
        f'{TRACE_CSS}{REVIEW_CSS}<div class="tv rv" id="rv-revealed">'
        f"<h3>Saved. The answer you just labelled, against the judges</h3>"
        f"<p class='tv-note'>Question: {text_html(question)}</p>{table}"
        f"<p>The user's rating: {text_html(thumb)}. In the queue because: {text_html(reason or 'added')}.</p></div>"
    )


def progress_markdown(progress: Sequence[Mapping[str, Any]]) -> str:
    """Per queue: done of total, skipped, being reviewed; the calibration sample marked."""
    if not progress:
        return (
            "The review queue is empty: no rule has put an answer in it yet ([review] rules in the "
            "evaluators file), and none was added by hand (the Trace tab's *Add to review queue*)."
        )
    lines = ["| Queue | Done | Skipped | Being reviewed | To do |", "|---|---|---|---|---|"]
    for p in progress:
        name = str(p["queue"]).replace("|", "\\|")
        if p.get("calibration"):
            name += " (random calibration sample)"
        lines.append(
            f"| {name} | {p['done']} of {p['total']} | {p['skipped']} | {p['in_review']} | {p['to_do']} |"
        )
    return "\n".join(lines)
