"""`python -m feedback`: see and take away the ratings without Langfuse.

"Ratings" are people's votes (👍/👎, a reason, a comment); judges', code checks' and reviewers'
scores are shown apart (--scores, or --all for both), each labelled by who scored.

list [-n N] [--json]        the latest ratings with their answers (--scores: judges' scores)
traces [-n N] [--json]      the latest chat turns (--all: judges' and dataset runs' traces too)
export --format csv|jsonl   every rating (and its trace) to stdout or --output FILE (--scores, --all)
status                      delivery to Langfuse: pending, delivered, rejected (ratings, then scores)
sync                        deliver pending ratings and scores to Langfuse now
path                        where the local store is
prune --older-than-days N   delete spans of traces older than N days (--dry-run: only count)
vacuum                      give the space of deleted rows back to the disk
copy --to URL               copy every trace, span and score into another store (e.g. Postgres)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from tqdm import tqdm

from config.settings import SettingsError, load_settings, positive_days
from feedback.database import normalize_url
from feedback.retention import cutoff_for, prune
from feedback.store import ScoreRow, Store, StoreError, by_label, is_chat_turn
from feedback.store_copy import copy_store, count_rows, same_store

EXPORT_FIELDS = [
    "score_id",
    "trace_id",
    "name",
    "value",
    "data_type",
    "comment",
    "by",
    "source",
    "session_id",
    "user_id",
    "created",
    "updated",
    "delivery",
    "delivery_error",
    "trace_name",
    "input",
    "output",
    "model",
    "status",
    "total_tokens",
    "cost_usd",
    # The A/B variant that gave the answer, and its experiment (empty outside an experiment).
    "variant",
    "experiment",
]


# --scores / --all: which scores a command shows (Store.scores' kind).
_KINDS = {"ratings": "ratings", "scores": "others", "all": "all"}
_NOUNS = {"ratings": "ratings", "scores": "judge and other scores", "all": "scores (ratings and others)"}


def _kind(args: argparse.Namespace) -> str:
    return "all" if getattr(args, "all", False) else "scores" if getattr(args, "scores", False) else "ratings"


def _rows(store: Store, limit: int | None = None, kind: str = "ratings") -> list[dict[str, Any]]:
    out = []
    traces: dict[str, dict[str, Any]] = {}
    for score in store.scores(limit=limit, kind=_KINDS[kind]):
        if score.trace_id not in traces:
            traces[score.trace_id] = (store.get_trace(score.trace_id) if score.trace_id else None) or {}
        out.append(_row(score, traces[score.trace_id]))
    return out


def _row(score: ScoreRow, trace: dict[str, Any]) -> dict[str, Any]:
    return {
        "score_id": score.id,
        "trace_id": score.trace_id,
        "name": score.name,
        # A CATEGORICAL score's value is its category (value is None for it).
        "value": score.shown_value,
        "data_type": score.data_type,
        "comment": score.comment,
        "by": score.by,
        "source": score.source,
        "session_id": score.session_id,
        "user_id": score.user_id,
        "created": score.created,
        "updated": score.updated,
        "delivery": score.delivery,
        "delivery_error": score.delivery_error,
        "trace_name": trace.get("name"),
        "input": trace.get("input"),
        "output": trace.get("output"),
        "model": trace.get("model"),
        "status": trace.get("status"),
        "total_tokens": trace.get("total_tokens"),
        # None: the trace's price is unknown (never written as 0).
        "cost_usd": trace.get("cost"),
        "variant": trace.get("variant"),
        "experiment": trace.get("experiment"),
    }


def format_cost(cost: float | None) -> str:
    """Dollars as people read them; an unknown price says so (never $0)."""
    if cost is None:
        return "cost ?"
    if cost == 0:
        return "$0"
    return f"${cost:.4f}" if cost >= 0.0001 else f"${cost:.2e}"


def _short(text: Any, width: int) -> str:
    value = " ".join(str(text or "").split())
    return value if len(value) <= width else value[: width - 1] + "…"


def _value_text(r: dict[str, Any]) -> str:
    value = r["value"]
    if r["by"] == "user":
        return "👍" if value == 1 else "👎"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value is not None else "-"


def cmd_list(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    kind = _kind(args)
    rows = _rows(store, args.n, kind)
    if args.json:
        json.dump(rows, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    if not rows:
        out.write(f"No {_NOUNS[kind]} yet.\n")
        if kind == "ratings":
            others = len(store.judge_scores(limit=1))
            if others:
                out.write("(Judges' and checks' scores are listed apart: `list --scores`.)\n")
        return 0
    for r in rows:
        who = f"by {by_label(r['by'])}"
        if r["by"] == "user" and r["user_id"]:
            who += f" {r['user_id']}"
        label = "" if r["by"] == "user" else f"{r['name']} = "
        where = f"trace {r['trace_id']}" if r["trace_id"] else f"session {r['session_id']}"
        out.write(
            f"{r['created'][:19]}  {label}{_value_text(r)}  {who}  {where}  {r['delivery']:<9}  "
            f"{_short(r['comment'], 30):<30}  Q: {_short(r['input'], 40)}  A: {_short(r['output'], 40)}\n"
        )
    return 0


def cmd_traces(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    rows = store.list_traces(args.n) if args.all else store.chat_turns(args.n)
    for t in rows:
        t["kind"] = "turn" if is_chat_turn(t.get("tags")) else _trace_kind(t.get("tags"))
    if args.json:
        json.dump(rows, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    if not rows:
        out.write("No chat turns yet.\n" if not args.all else "No traces yet.\n")
        return 0
    for t in rows:
        kind = f"{t['kind']:<10}  " if args.all else ""
        out.write(
            f"{t['id']}  {kind}{t['status']:<5}  {t['latency_ms'] or 0:>9.1f} ms  {t['total_tokens']:>6} tok  "
            f"{format_cost(t.get('cost')):>10}  user {t['user_id']}  Q: {_short(t['input'], 40)}\n"
        )
    return 0


def _trace_kind(tags: Any) -> str:
    text = tags if isinstance(tags, str) else json.dumps(tags)
    return "evaluation" if '"evaluation"' in text else "dataset"


def cmd_export(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    kind = _kind(args)
    rows = _rows(store, kind=kind)
    target = open(args.output, "w", newline="", encoding="utf-8") if args.output else out
    try:
        if args.format == "csv":
            writer = csv.DictWriter(target, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        else:
            for r in rows:
                target.write(json.dumps(r, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            target.close()
    if args.output:
        print(f"Exported {len(rows)} {_NOUNS[kind]} to {args.output}", file=sys.stderr)
    return 0


def _counts_text(counts: dict[str, Any], indent: str = "  ") -> str:
    age = counts["oldest_pending_age_s"]
    return (
        f"{indent}pending: {counts['pending']}\n{indent}delivered: {counts['delivered']}\n"
        f"{indent}rejected: {counts['rejected']}\n"
        f"{indent}oldest pending: {'-' if age is None else f'{age:.0f} s ago'}\n"
    )


def cmd_status(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    ratings = store.delivery_counts("ratings")
    others = store.delivery_counts("others")
    if args.json:
        json.dump({"ratings": ratings, "scores": others}, out)
        out.write("\n")
        return 0
    try:
        configured = load_settings().langfuse_enabled
    except SettingsError:
        configured = True  # unreadable settings: say nothing about Langfuse rather than guess
    out.write("Ratings (people's votes) to Langfuse:\n" + _counts_text(ratings))
    out.write("Judges', checks' and other scores to Langfuse:\n" + _counts_text(others))
    if not configured:
        out.write(
            "Langfuse is not configured (no LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY): everything is "
            "kept in this store only; 'pending' is what `sync` sends once keys are set.\n"
        )
    return 0


def cmd_sync(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from feedback.langfuse_sink import LangfuseSink
    from feedback.outbox import Outbox

    settings = load_settings()
    if not settings.langfuse_enabled:
        out.write("Langfuse is not configured: set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY.\n")
        return 1
    outbox = Outbox(store, LangfuseSink.from_settings(settings))
    store.retry_now()
    total = store.delivery_counts()["pending"]
    done = 0

    def progress(_score: ScoreRow, result: Any) -> None:
        nonlocal done
        done += 1
        width = 30
        filled = int(width * done / max(total, 1))
        out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {result.outcome:<8}")
        out.flush()

    outbox.deliver_due(on_each=progress)
    if total:
        out.write("\n")
    failed = False
    for kind, noun in (("ratings", "ratings"), ("others", "judge and other scores")):
        counts = store.delivery_counts(kind)
        failed = failed or bool(counts["pending"] or counts["rejected"])
        if kind == "others" and not (counts["pending"] or counts["delivered"] or counts["rejected"]):
            continue
        out.write(
            f"{noun}: delivered: {counts['delivered']}, pending: {counts['pending']}, "
            f"rejected: {counts['rejected']}\n"
        )
    return 1 if failed else 0


def cmd_path(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    out.write(f"{store.path.resolve() if store.path else store.where}\n")
    return 0


def cmd_prune(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    days = args.older_than_days
    if days is None:
        try:
            days = load_settings().store_retention_days
        except SettingsError as exc:
            print(f"Configuration error: {exc}", file=sys.stderr)
            return 2
        if days is None:
            print("Give --older-than-days N, or set STORE_RETENTION_DAYS.", file=sys.stderr)
            return 2
    now = time.time()
    before = datetime.fromtimestamp(cutoff_for(days, now), UTC).isoformat(timespec="seconds")
    if args.dry_run:
        n = store.count_spans_before(cutoff_for(days, now))
        out.write(f"Would delete {n} spans of traces started before {before} (dry run: nothing deleted).\n")
        return 0
    n = prune(store, days, now=now)
    out.write(f"Deleted {n} spans of traces started before {before}; trace summaries and ratings kept.\n")
    if n:
        out.write(
            "The file keeps its size (new spans reuse the space); `python -m feedback vacuum` shrinks it.\n"
        )
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} KB"


def cmd_vacuum(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    before, after = store.vacuum()
    out.write(f"{store.path or store.where}: {_size(before)} -> {_size(after)}\n")
    return 0


def cmd_copy(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    try:
        target = Store(normalize_url(args.to) if "://" in args.to else args.to)
    except (ValueError, StoreError) as exc:
        print(f"Cannot open the target store: {exc}", file=sys.stderr)
        return 1
    if same_store(store, target):
        target.close()
        print("The target is the store itself; nothing to copy.", file=sys.stderr)
        return 2
    try:
        total = count_rows(store)
        with tqdm(total=total.traces + total.spans + total.scores, unit="row", file=sys.stderr) as bar:
            done = copy_store(store, target, on_rows=lambda _table, n: bar.update(n))
    finally:
        target.close()
    out.write(
        f"Copied {done.traces} traces, {done.spans} spans and {done.scores} scores (ratings and judges') "
        f"from {store.where} "
        f"to {target.where} (rows already there were updated, none duplicated).\n"
    )
    return 0


def _days(text: str) -> float:
    try:
        return positive_days(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of days greater than 0, got {text!r}") from None


def _which_scores(s: argparse.ArgumentParser) -> None:
    group = s.add_mutually_exclusive_group()
    group.add_argument(
        "--scores", action="store_true", help="judges', code checks' and reviewers' scores instead of ratings"
    )
    group.add_argument("--all", action="store_true", help="ratings and every other score, column `by`")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m feedback", description="The app's local ratings store.")
    p.add_argument(
        "--db",
        help="the store: a SQLite file or a database URL (default: DATABASE_URL, else DATA_DIR/feedback.sqlite3)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("list", help="the latest ratings (people's votes); --scores: judges' and checks'")
    s.add_argument("-n", type=int, default=20, help="how many (newest first)")
    s.add_argument("--json", action="store_true")
    _which_scores(s)
    s.set_defaults(fn=cmd_list)
    s = sub.add_parser("traces", help="the latest chat turns; --all: judges' and dataset runs' traces too")
    s.add_argument("-n", type=int, default=20, help="how many (newest first)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--all", action="store_true", help="also evaluation (judge) and dataset-run traces")
    s.set_defaults(fn=cmd_traces)
    s = sub.add_parser("export", help="every rating (people's votes); --scores, --all: judges' scores")
    s.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    s.add_argument("--output", "-o", help="write to this file instead of stdout")
    _which_scores(s)
    s.set_defaults(fn=cmd_export)
    s = sub.add_parser("status")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    s = sub.add_parser("sync")
    s.set_defaults(fn=cmd_sync)
    s = sub.add_parser("path")
    s.set_defaults(fn=cmd_path)
    s = sub.add_parser("prune", help="delete spans of traces older than N days; traces and ratings stay")
    s.add_argument("--older-than-days", type=_days, help="default: STORE_RETENTION_DAYS")
    s.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    s.set_defaults(fn=cmd_prune)
    s = sub.add_parser("vacuum", help="shrink the file after a prune")
    s.set_defaults(fn=cmd_vacuum)
    s = sub.add_parser("copy", help="copy this store into another one (run it again: it never duplicates)")
    s.add_argument("--to", required=True, help="the target: postgresql://user:password@host/db, or a file")
    s.set_defaults(fn=cmd_copy)
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    out = out or sys.stdout
    try:
        db = args.db or load_settings().store_url
        if "://" in db:
            db = normalize_url(db)
    except (SettingsError, ValueError) as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        store = Store(db)
    except StoreError as exc:
        print(f"Cannot open the store: {exc}", file=sys.stderr)
        return 1
    try:
        return int(args.fn(store, args, out) or 0)
    finally:
        store.close()
