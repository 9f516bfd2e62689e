"""One trace as a page: its span tree as a waterfall, its steps, its LLM calls, its scores.

Everything shown here was written by a user, a model or the model's code: hostile text. It is
put in the page only through `_text` (cut to a length, bidirectional controls made visible,
html.escape with quotes) and only inside elements, never in a tag, an attribute name, a URL or
a style; style values are numbers this module formats itself. A store with broken rows
(unreadable attributes, missing times) still gives a page that says what it could not read,
never a traceback.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from dashboard.bidi import visible_controls
from dashboard.queries import is_demo as queries_is_demo
from evals.context import Step, json_or, steps_from_spans
from feedback.store import Store, StoreError
from feedback.votes import SCORE_NAME

log = logging.getLogger(__name__)

__all__ = ["TRACE_CSS", "langfuse_trace_url", "render_trace", "trace_html", "load_trace", "TraceData"]

# Longest text shown for one message, observation or code block; the rest is cut with a note.
MAX_TEXT_CHARS = 20_000
# Longest name or label shown (a span, model, user, session, tag or score name; a value).
LABEL_CHARS = 500
# Longest trace id looked up (ids are 32 hex characters; anything else is refused politely).
MAX_ID_CHARS = 200
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
STATUS_CLASSES = {"OK": "ok", "ERROR": "error", "UNSET": "unset"}

TRACE_CSS = """
<style>
.tv { font-size: 14px; line-height: 1.45; }
.tv h3 { margin: 18px 0 6px; font-size: 16px; }
.tv table.tv-head, .tv table.tv-head tr, .tv table.tv-head td { border: none !important; }
.tv .tv-head td { padding: 2px 10px 2px 0; vertical-align: top; }
.tv .tv-head td:first-child { color: #6b7280; white-space: nowrap; }
.tv pre { white-space: pre-wrap; word-break: break-word; background: rgba(127,127,127,.09);
  padding: 8px; border-radius: 6px; margin: 4px 0; max-height: 420px; overflow: auto; }
.tv .tv-wf { border: 1px solid rgba(127,127,127,.25); border-radius: 6px; padding: 6px; }
.tv .tv-row { display: grid; grid-template-columns: minmax(180px, 34%) 1fr 150px; gap: 8px;
  align-items: center; padding: 2px 0; border-bottom: 1px solid rgba(127,127,127,.08); }
.tv .tv-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.tv .tv-kind { font-size: 11px; color: #6b7280; margin-left: 4px; }
.tv .tv-track { position: relative; height: 14px; background: rgba(127,127,127,.08); border-radius: 3px; }
.tv .tv-bar { position: absolute; top: 0; height: 14px; min-width: 2px; border-radius: 3px; }
.tv .tv-bar.ok { background: #60a5fa; }
.tv .tv-bar.error { background: #ef4444; }
.tv .tv-bar.unset { background: #9ca3af; }
.tv .tv-dur { font-variant-numeric: tabular-nums; font-size: 12px; text-align: right; }
.tv .tv-err { color: #b91c1c; }
.tv table.tv-scores { border-collapse: collapse; width: 100%; }
.tv table.tv-scores th, .tv table.tv-scores td { border-bottom: 1px solid rgba(127,127,127,.2);
  padding: 4px 6px; text-align: left; vertical-align: top; }
.tv details { margin: 4px 0; }
.tv summary { cursor: pointer; }
.tv .tv-note { color: #6b7280; }
</style>
"""


def _text(value: Any, limit: int = LABEL_CHARS) -> str:
    """Any value as inert HTML text, at most `limit` characters of it (then a note)."""
    shown = _cut("" if value is None else str(value), limit)
    return html.escape(visible_controls(shown), quote=True)


def _cut(value: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(value) <= limit:
        return value
    return value[:limit] + f"\n[... {len(value) - limit:,} more characters not shown]"


def _pre(value: Any, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return f"<pre{klass}>{_text(value, MAX_TEXT_CHARS)}</pre>"


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def format_cost(value: Any) -> str:
    """US dollars; a missing cost is unknown, never $0."""
    cost = _float(value)
    if cost is None:
        return "unknown"
    if cost == 0:
        return "$0"
    if abs(cost) < 0.01:
        return f"${cost:.6f}".rstrip("0")
    return f"${cost:,.4f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "?"
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _when(epoch: Any) -> str:
    value = _float(epoch)
    if value is None:
        return "unknown"
    try:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "unknown"


def langfuse_trace_url(base_url: str, trace_id: str) -> str | None:
    """Langfuse's own link form: /trace/ID redirects to the trace in its project."""
    parts = urlsplit(base_url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc or not _TRACE_ID.match(trace_id):
        return None
    return f"{base_url.rstrip('/')}/trace/{quote(trace_id.lower())}"


@dataclass
class SpanRow:
    span: dict[str, Any]
    attributes: dict[str, Any]
    depth: int = 0
    readable: bool = True


@dataclass
class TraceData:
    """What one trace page shows, read from the store in one go."""

    trace: dict[str, Any]
    spans: list[SpanRow] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _tree(spans: Sequence[Mapping[str, Any]]) -> tuple[list[SpanRow], list[str]]:
    """Spans depth first (children by start time), each with its depth; broken rows noted."""
    problems: list[str] = []
    rows: list[SpanRow] = []
    for span in spans:
        attrs = json_or(span.get("attributes"), None)
        readable = isinstance(attrs, dict) or span.get("attributes") in (None, "")
        rows.append(SpanRow(dict(span), attrs if isinstance(attrs, dict) else {}, readable=readable))
    unreadable = sum(1 for r in rows if not r.readable)
    if unreadable:
        problems.append(f"{unreadable} span(s) have attributes that could not be read; shown without them.")
    ids = {r.span.get("span_id") for r in rows}
    children: dict[Any, list[SpanRow]] = {}
    roots: list[SpanRow] = []
    for row in rows:
        parent = row.span.get("parent_id")
        if parent is not None and parent in ids and parent != row.span.get("span_id"):
            children.setdefault(parent, []).append(row)
        else:
            roots.append(row)

    def start(row: SpanRow) -> float:
        value = _float(row.span.get("start_time"))
        return value if value is not None else float("inf")

    ordered: list[SpanRow] = []
    seen: set[int] = set()
    stack = [(r, 0) for r in sorted(roots, key=start, reverse=True)]
    while stack:
        row, depth = stack.pop()
        if id(row) in seen:
            continue
        seen.add(id(row))
        row.depth = depth
        ordered.append(row)
        kids = sorted(children.get(row.span.get("span_id"), []), key=start, reverse=True)
        stack.extend((kid, depth + 1) for kid in kids)
    # A cycle of parent ids (a broken store) leaves spans unreached: show them at the end.
    for row in rows:
        if id(row) not in seen:
            ordered.append(row)
    return ordered, problems


def _without_cycles(spans: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The spans with any parent link that leads back to itself cut (a corrupt store); walking
    the tree (evals.context.steps_from_spans) must end."""
    rows = [dict(s) for s in spans]
    parent = {r.get("span_id"): r.get("parent_id") for r in rows}
    for row in rows:
        seen = {row.get("span_id")}
        current = row.get("parent_id")
        while current is not None and current in parent:
            if current in seen:
                row["parent_id"] = None
                parent[row.get("span_id")] = None
                break
            seen.add(current)
            current = parent[current]
    return rows


def _scores(store: Store, trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every live score on the trace, and the conversation scores of its session."""
    trace_id = trace["id"]
    scores = store.rows(
        "SELECT * FROM scores WHERE trace_id = :id AND deleted = 0 ORDER BY name, updated", {"id": trace_id}
    )
    session_id = trace.get("session_id")
    if session_id:
        for row in store.rows(
            """SELECT * FROM scores WHERE trace_id = '' AND session_id = :sid AND deleted = 0
               ORDER BY name, updated""",
            {"sid": session_id},
        ):
            row["conversation"] = True
            scores.append(row)
    targets = [t for t in (trace_id, session_id) if t]
    reasoning: dict[str, dict[str, Any]] = {}
    for target in targets:
        for job in store.rows(
            """SELECT score_id, evaluator, kind, reasoning, error, finished FROM eval_jobs
               WHERE target_id = :t AND score_id IS NOT NULL ORDER BY finished""",
            {"t": target},
        ):
            reasoning[job["score_id"]] = job
    for row in scores:
        job = reasoning.get(row["id"])
        if job is not None:
            row["reasoning"] = job.get("reasoning")
            row["evaluator"] = job.get("evaluator")
            row["evaluator_kind"] = job.get("kind")
    # People's ratings first, then every other score by name.
    scores.sort(key=lambda r: (not _is_rating(r), bool(r.get("conversation"))))
    return scores


def _is_rating(row: Mapping[str, Any]) -> bool:
    """A person's vote: the user-feedback score a person wrote (a judge's score never is)."""
    return row.get("name") == SCORE_NAME and row.get("source") == "user"


def scored_by(row: Mapping[str, Any]) -> str:
    """Who wrote a score, as the Scores table says it: a person, a judge (an LLM), the bundled
    demo judge (marked in the score's metadata; old scores have no mark), a code check."""
    source = str(row.get("source") or "")
    if _is_rating(row):
        return "person"
    if row.get("scored_by") == "reviewer" and source != "EVAL":
        return "reviewer"  # a label from the review queue (source ANNOTATION)
    if source != "EVAL":
        return source or "unknown"
    if queries_is_demo(row.get("metadata")):
        return "demo judge"
    meta = json_or(row.get("metadata"), {})
    kind = row.get("evaluator_kind") or (meta.get("scored_by") if isinstance(meta, dict) else None)
    if kind in ("code", "check"):
        return "code check"
    if isinstance(meta, dict) and meta.get("dataset_run"):
        return "dataset run"
    return "judge"


def load_trace(store: Store, trace_id: str) -> TraceData | None:
    """The trace, its spans, steps and scores; None if the store has no such trace."""
    trace = store.get_trace(trace_id)
    if trace is None:
        return None
    spans = store.spans_of(trace_id)
    ordered, problems = _tree(spans)
    try:
        steps, _tools = steps_from_spans(_without_cycles(spans))
    except Exception:  # noqa: BLE001 - a broken span must not take the page down
        log.exception("Could not read the steps of trace %s", trace_id)
        steps = []
        problems.append("The agent's steps could not be read from the spans.")
    data = TraceData(trace=dict(trace), spans=ordered, steps=steps, problems=problems)
    data.scores = _scores(store, trace)
    return data


# ----- HTML -------------------------------------------------------------------------------


def _header(data: TraceData, langfuse_url: str | None) -> str:
    t = data.trace
    tags = json_or(t.get("tags"), [])
    tags_text = ", ".join(str(x) for x in tags) if isinstance(tags, list) else str(t.get("tags") or "")
    latency = _float(t.get("latency_ms"))
    status = str(t.get("status") or "OK")
    status_html = _text(status)
    if status == "ERROR":
        status_html = (
            f'<span class="tv-err">{_text(status)}: {_text(t.get("status_message") or "", 2000)}</span>'
        )
    rows = [
        ("Trace", f"<code>{_text(t.get('id'))}</code>"),
        ("Started", _text(_when(t.get("start_time")))),
        ("Status", status_html),
        ("Latency", _text(_ms(latency))),
        ("Model", _text(t.get("model") or "unknown")),
        (
            "Tokens",
            _text(f"{int(t.get('prompt_tokens') or 0):,} in + {int(t.get('completion_tokens') or 0):,} out"),
        ),
        ("Cost", _text(format_cost(t.get("cost")))),
        ("User", _text(t.get("user_id") or "")),
        ("Session", f"<code>{_text(t.get('session_id') or '')}</code>"),
        ("Tags", _text(tags_text)),
    ]
    if langfuse_url:
        rows.append(
            (
                "Langfuse",
                f'<a href="{_text(langfuse_url, MAX_TEXT_CHARS)}" target="_blank" rel="noopener noreferrer">'
                "open this trace in Langfuse</a>",
            )
        )
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return (
        f'<table class="tv-head">{table}</table>'
        f"<h3>Question</h3>{_pre(t.get('input') or '')}"
        f"<h3>Answer</h3>{_pre(t.get('output') or '(no answer)')}"
    )


def _waterfall(data: TraceData) -> str:
    rows = data.spans
    if not rows:
        return "<h3>Spans</h3><p class='tv-note'>No spans are stored for this trace (retention may have dropped them).</p>"
    starts = [_float(r.span.get("start_time")) for r in rows]
    ends = [_float(r.span.get("end_time")) for r in rows]
    known_starts = [s for s in starts if s is not None]
    known_ends = [e for e in ends if e is not None]
    origin = min(known_starts) if known_starts else 0.0
    finish = max(known_ends + known_starts) if known_starts else 0.0
    total = max(finish - origin, 1e-6)
    out = ['<h3>Spans</h3><div class="tv-wf" id="tv-waterfall">']
    for row, start, end in zip(rows, starts, ends, strict=True):
        span = row.span
        status = STATUS_CLASSES.get(str(span.get("status") or "UNSET"), "unset")
        if start is None:
            left, width, duration = 0.0, 0.0, None
        else:
            stop = end if end is not None and end >= start else start
            left = (start - origin) / total * 100
            width = (stop - start) / total * 100
            duration = (stop - start) * 1000
        offset = "?" if start is None else f"+{(start - origin) * 1000:,.0f} ms"
        tokens = span.get("total_tokens")
        extra = []
        if tokens:
            extra.append(f"{int(tokens):,} tok")
        if span.get("kind") == "LLM":
            extra.append(format_cost(span.get("cost")))
        kind = f'<span class="tv-kind">{_text(span.get("kind") or "")}</span>'
        error = ""
        if status == "error":
            error = f'<div class="tv-err" style="padding-left:{row.depth * 14}px">{_text(span.get("status_message") or "error")}</div>'
        out.append(
            f'<div class="tv-row" data-status="{status}">'
            f'<div class="tv-name" style="padding-left:{row.depth * 14}px" title="{_text(span.get("name"))}">'
            f"{_text(span.get('name') or '(unnamed)')}{kind}</div>"
            f'<div class="tv-track"><div class="tv-bar {status}" '
            f'style="left:{left:.3f}%;width:{width:.3f}%"></div></div>'
            f'<div class="tv-dur">{_text(offset)} · {_text(_ms(duration))}'
            f"{(' · ' + _text(' · '.join(extra))) if extra else ''}</div></div>{error}"
        )
    out.append("</div>")
    return "".join(out)


def _steps(data: TraceData) -> str:
    if not data.steps:
        return "<h3>Steps</h3><p class='tv-note'>No agent steps were recorded.</p>"
    out = ["<h3>Steps</h3>"]
    for step in data.steps:
        out.append(f"<details open><summary><b>Step {int(step.number)}</b></summary>")
        if step.thought:
            out.append(f"<div>Thought</div>{_pre(step.thought)}")
        if step.code:
            out.append(f"<div>Code</div>{_pre(step.code)}")
        for call in step.tool_calls:
            args = json.dumps(call.arguments, ensure_ascii=False, default=str)
            result = f"failed: {call.error}" if call.error else (call.output or "")
            out.append(f"<div>Tool {_text(call.name)}</div>{_pre(f'{args} -> {result}')}")
        if step.observation:
            out.append(f"<div>Observation</div>{_pre(step.observation)}")
        if step.error:
            out.append(f"<div class='tv-err'>Error</div>{_pre(step.error, 'tv-err')}")
        out.append("</details>")
    return "".join(out)


def _messages(value: Any) -> list[tuple[str, str]]:
    """(role, text) of an LLM call's input or output value, as readable as the value allows."""
    parsed = json_or(value, value)
    if isinstance(parsed, dict) and isinstance(parsed.get("messages"), list):
        parsed = parsed["messages"]
    if isinstance(parsed, dict) and ("content" in parsed or "role" in parsed):
        parsed = [parsed]
    if isinstance(parsed, list):
        out = []
        for item in parsed:
            if isinstance(item, dict):
                content = item.get("content")
                if isinstance(content, list):
                    content = "".join(
                        str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content
                    )
                out.append((str(item.get("role") or ""), "" if content is None else str(content)))
            else:
                out.append(("", str(item)))
        return out
    if parsed is None:
        return []
    if isinstance(parsed, str):
        return [("", parsed)]
    return [("", json.dumps(parsed, ensure_ascii=False, indent=1, default=str))]


def _llm_calls(data: TraceData) -> str:
    calls = [r for r in data.spans if r.span.get("kind") == "LLM"]
    if not calls:
        return "<h3>LLM calls</h3><p class='tv-note'>No LLM calls were recorded.</p>"
    out = ["<h3>LLM calls</h3>"]
    for n, row in enumerate(calls, start=1):
        span, attrs = row.span, row.attributes
        start, end = _float(span.get("start_time")), _float(span.get("end_time"))
        duration = (end - start) * 1000 if start is not None and end is not None else None
        model = attrs.get("llm.model_name") or ""
        summary = (
            f"Call {n}: {_cut(str(span.get('name') or ''), LABEL_CHARS)} · {_cut(str(model), LABEL_CHARS)} · {_ms(duration)} · "
            f"{int(span.get('prompt_tokens') or 0):,} in + {int(span.get('completion_tokens') or 0):,} out"
            f" tokens · {format_cost(span.get('cost'))}"
        )
        out.append(f"<details><summary>{_text(summary, MAX_TEXT_CHARS)}</summary>")
        for label, key in (("Input", "input.value"), ("Output", "output.value")):
            messages = _messages(attrs.get(key))
            if not messages:
                continue
            out.append(f"<div><b>{label}</b></div>")
            for role, text in messages:
                heading = f"<div class='tv-note'>{_text(role)}</div>" if role else ""
                out.append(heading + _pre(text))
        out.append("</details>")
    return "".join(out)


def _score_value(row: Mapping[str, Any]) -> str:
    if row.get("string_value") is not None:
        return str(row["string_value"])
    value = _float(row.get("value"))
    if value is None:
        return "(none)"
    if _is_rating(row):
        return "liked" if value >= 0.5 else "disliked"
    return f"{value:g}"


def _scores_html(data: TraceData) -> str:
    if not data.scores:
        return "<h3>Scores</h3><p class='tv-note'>No scores on this trace.</p>"
    head = "<tr><th>Score</th><th>Value</th><th>By</th><th>Reason / comment</th><th>Judge reasoning</th></tr>"
    body = []
    for row in data.scores:
        name = str(row.get("name") or "")
        if row.get("conversation"):
            name += " (conversation)"
        source = str(row.get("source") or "")
        by = scored_by(row)
        if source == "user":
            comment = "; ".join(p for p in (row.get("reason"), row.get("note")) if p)
            reasoning = ""
        else:
            comment = row.get("comment") if source != "EVAL" else ""
            reasoning = row.get("reasoning") or row.get("note") or ""
        body.append(
            f"<tr><td>{_text(name)}</td><td>{_text(_score_value(row))}</td><td>{_text(by)}</td>"
            f"<td>{_text(comment or '', 2000)}</td>"
            f"<td>{_text(reasoning or '', 4000)}</td></tr>"
        )
    return f'<h3>Scores</h3><table class="tv-scores">{head}{"".join(body)}</table>'


def render_trace(data: TraceData, langfuse_url: str | None = None) -> str:
    """The trace page (HTML) for data already read from the store."""
    problems = "".join(f"<p class='tv-err'>{_text(p)}</p>" for p in data.problems)
    return (
        f'{TRACE_CSS}<div class="tv" id="tv-trace">{problems}{_header(data, langfuse_url)}'
        f"{_waterfall(data)}{_steps(data)}{_llm_calls(data)}{_scores_html(data)}</div>"
    )


def text_html(value: Any, limit: int = LABEL_CHARS) -> str:
    """Any value as inert HTML text (for other views: the review queue's)."""
    return _text(value, limit)


def pre_html(value: Any) -> str:
    """A block of hostile text, cut and escaped, as the trace page shows it."""
    return _pre(value)


def steps_html(data: TraceData) -> str:
    """The agent's steps of a loaded trace (thought, code, tool calls, observation, error)."""
    return _steps(data)


def score_value_text(row: Mapping[str, Any]) -> str:
    """A score's value as the Scores table says it ("liked", "0.5", a category)."""
    return _score_value(row)


def message_html(text: str) -> str:
    """A plain sentence in the viewer's place (no trace chosen, unknown id, store down)."""
    return f'{TRACE_CSS}<div class="tv" id="tv-trace"><p>{_text(text, MAX_TEXT_CHARS)}</p></div>'


def trace_html(store: Store, trace_id: Any, *, langfuse_base_url: str | None = None) -> str:
    """The trace page for an id typed or clicked by the viewer; a clear sentence when there is none."""
    if not isinstance(trace_id, str) or not trace_id.strip():
        return message_html("Pick an answer in Worst answers, or paste a trace id, to see its trace.")
    trace_id = trace_id.strip()
    # Not printable: NUL or a lone surrogate (the database refuses them), a bidi control.
    if len(trace_id) > MAX_ID_CHARS or not trace_id.isprintable():
        return message_html("That is not a trace id (trace ids have 32 hexadecimal characters).")
    try:
        data = load_trace(store, trace_id)
    except StoreError as exc:
        log.exception("Could not read trace %s", trace_id)
        return message_html(f"The store could not be read ({exc.reason}). Try again in a moment.")
    if data is None:
        return message_html(f"No trace with the id {trace_id} is in the store.")
    try:
        url = langfuse_trace_url(langfuse_base_url, trace_id) if langfuse_base_url else None
        return render_trace(data, url)
    except Exception:  # noqa: BLE001 - the viewer says so instead of failing the page
        log.exception("Could not show trace %s", trace_id)
        return message_html(f"The trace {trace_id} could not be shown: some of its data is malformed.")
