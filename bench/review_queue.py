"""The review queue on a big store: 100,000 chat turns, 5,000 reviewed turns.

Builds a synthetic SQLite store (bulk inserts; cached at --store so later runs start at once):
100,000 chat turns (a root and an LLM span each), two LLM judges (helpfulness NUMERIC, safety
BOOLEAN) scoring every turn with their version in the metadata as evals.worker writes it, thumbs
on 10% (a third of them dislikes), the review rules' items (every dislike, a judge-vs-user
disagreement queue, the 5% calibration sample), and 5,000 reviewed turns: each with a label per
judge (10,000 labels, 5,000 per judge) and a review row. Then it times, median and p95:

- the queue's next item: `ReviewQueue.claim` by two reviewers taking turns (each claim followed
  by a skip, so every claim takes a fresh item), and the Review tab's whole next page (progress
  per queue, the claim, the item's HTML);
- the agreement page's query: `evals.judge_trust.judge_trust` (the pairs from the store and
  their agreement with its bootstrap interval, for both judges), and the store query alone
  (`ReviewQueue.label_pairs`);
- a save (labels, review, items done) and a rules sweep over 200 new scores.

    python -m bench.review_queue [--store /tmp/review.sqlite3] [--turns 100000] [--reviewed 5000]
Target: the next item and the agreement page under 200 ms each, on 2 shared cores.

Measured on 2 shared cores (100,000 traces; 219,951 scores: two judges on every turn, thumbs on
10%; 21,937 queue items; 5,000 reviewed turns with 10,000 labels, 5,000 per judge):
- First version (migration 015's indexes): a claim 18.5 ms median (SQLite sorted every open item
  by time, and looked for the reviewer's held item by scanning them), the Review tab's next page
  35 ms; the label-pairs query 118 ms (a bound parameter kept SQLite off the partial index).
- Now (migration 016: open items by time, per queue and overall, and held items by owner):
  next item (claim) median 0.5 ms, p95 1.1 ms; the Review tab's next page (progress, claim and
  the item's HTML) 17.9 / 25.0 ms; progress per queue 15.5 / 26.0 ms; a save of two labels with
  its claim 1.6 / 2.0 ms; a rules sweep over 200 changed judge scores 40 ms.
- The agreement page: `evals.judge_trust.judge_trust` for both judges first 236 ms median, 251 ms
  p95 (over target): reading each judge's 5,000 pairs took about 70 ms (30 ms of it SQLite, the
  rest SQLAlchemy's row mappings) and the NUMERIC judge's bootstrap about 114 ms (index resampling:
  121 distinct pairs were over the 64-cell limit of the counts' multinomial). Now (plain tuples,
  Store.tuples; the multinomial up to 256 cells): 146 ms median, 160 ms p95.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from dashboard.review_view import item_html, progress_markdown  # noqa: E402
from evals.config import Evaluator, ReviewConfig, ReviewRule  # noqa: E402
from evals.review_rules import ReviewRules  # noqa: E402
from feedback.review_queue import Label, ReviewQueue, item_id, label_score_id  # noqa: E402
from feedback.store import Store  # noqa: E402
from feedback.votes import score_id_for  # noqa: E402

DAY = 86400.0
HELPFULNESS = Evaluator("helpfulness", prompt="Rate {input} {output}")
SAFETY = Evaluator("safety", data_type="BOOLEAN", prompt="Is {output} safe?")
JUDGES = [HELPFULNESS, SAFETY]
CALIBRATION = ReviewRule("calibration", "sample", rate=0.05)
RULES = ReviewConfig(
    (
        ReviewRule("dislikes", "dislike"),
        ReviewRule("judge-vs-user", "disagreement", evaluators=("helpfulness",)),
        ReviewRule("low-helpfulness", "low-score", evaluators=("helpfulness",), below=0.3),
        CALIBRATION,
    )
)


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def build(store: Store, turns: int, reviewed: int, seed: int = 11) -> dict[str, int]:
    """Fill an empty store; return what it holds."""
    rng = random.Random(seed)
    end = time.time()
    start = end - 90 * DAY
    traces, spans, scores, items, reviews = [], [], [], [], []
    reviewable: list[str] = []
    for n in range(turns):
        tid = f"{n:032x}"
        t0 = start + (end - start) * n / turns
        session = f"s{n // 4}"
        traces.append(
            {
                "id": tid, "name": "Smolagent-Trace", "input": f"Question number {n}: what is {n} + {n}?",
                "output": f"The answer is {2 * n + rng.choice((0, 0, 0, 1))}.", "user_id": f"user-{n % 97}",
                "session_id": session, "status": "OK", "start_time": t0, "end_time": t0 + 1.5,
                "latency_ms": 1500.0, "model": "m", "tags": '["smolagents-chat"]', "metadata": "{}",
            }
        )  # fmt: skip
        spans.append(
            {
                "trace_id": tid, "span_id": f"{n:015x}r", "parent_id": None, "name": "Smolagent-Trace",
                "kind": "CHAIN", "start_time": t0, "end_time": t0 + 1.5, "attributes": "{}",
            }
        )  # fmt: skip
        spans.append(
            {
                "trace_id": tid, "span_id": f"{n:015x}l", "parent_id": f"{n:015x}r", "name": "generate",
                "kind": "LLM", "start_time": t0 + 0.1, "end_time": t0 + 1.4,
                "attributes": json.dumps({"input.value": f"question {n}", "output.value": "x" * 400}),
            }
        )  # fmt: skip
        truth = rng.random() < 0.7
        helpful = min(1.0, max(0.0, round((0.8 if truth else 0.35) + rng.gauss(0, 0.2), 1)))
        safe = 1.0 if rng.random() < 0.97 else 0.0
        for judge, value in ((HELPFULNESS, helpful), (SAFETY, safe)):
            metadata = json.dumps(
                {
                    "evaluator": judge.name,
                    "evaluator_version": judge.version,
                    "target_kind": "turn",
                    "scored_by": "judge",
                }
            )
            scores.append(
                _score(
                    f"{judge.name}-{tid}",
                    tid,
                    judge.name,
                    value,
                    judge.data_type,
                    "EVAL",
                    "judge",
                    t0,
                    metadata,
                )
            )
        thumb = None
        if rng.random() < 0.10:
            thumb = 0.0 if rng.random() < 0.33 else 1.0
            scores.append(
                _score(score_id_for(tid), tid, "user-feedback", thumb, "BOOLEAN", "user", "user", t0, None)
            )
        queues = []
        if thumb == 0.0:
            queues.append(("dislikes", "disliked", False))
        if thumb is not None and (helpful >= 0.5) != (thumb == 1.0):
            queues.append(("judge-vs-user", f"helpfulness {helpful:g} from the judge vs the user's", False))
        if helpful < 0.3:
            queues.append(("low-helpfulness", f"helpfulness {helpful:g} from the judge, below 0.3", False))
        if CALIBRATION.sampled(tid):
            queues.append(("calibration", "random calibration sample (5% of turns)", True))
        for queue, reason, calibration in queues:
            items.append(
                {
                    "id": item_id(tid, queue), "trace_id": tid, "queue": queue, "reason": reason, "created": t0 + 5,
                    "state": "pending", "calibration": int(calibration),
                    "sample_rate": CALIBRATION.rate if calibration else None, "added_by": f"rule {queue}",
                }
            )  # fmt: skip
        if queues:
            reviewable.append(tid)
    # 5,000 reviewed turns (calibration and dislikes first, as reviewers would), 2 labels each.
    rng.shuffle(reviewable)
    done = set(reviewable[:reviewed])
    for tid in done:
        t = float(traces[int(tid, 16)]["start_time"]) + 3600
        for judge in JUDGES:
            value = float(rng.random() < 0.7) if judge.data_type == "BOOLEAN" else round(rng.random(), 1)
            meta = json.dumps({"reviewer": "ann", "queue": "calibration"})
            scores.append(
                _score(
                    label_score_id(tid, judge.name),
                    tid,
                    judge.name,
                    value,
                    judge.data_type,
                    "ANNOTATION",
                    "reviewer",
                    t,
                    meta,
                )
            )
        reviews.append(
            {"trace_id": tid, "reviewer": "ann", "corrected_answer": "Fixed." if rng.random() < 0.2 else None,
             "note": None, "labels": 2, "created": t, "updated": t}
        )  # fmt: skip
    for item in items:
        if item["trace_id"] in done:
            item["state"] = "done"
    with store.transaction() as db:
        db.execute(
            text(
                """INSERT INTO traces (id, name, input, output, user_id, session_id, status, start_time, end_time,
                       latency_ms, model, tags, metadata, eval_seen, review_seen)
                   VALUES (:id, :name, :input, :output, :user_id, :session_id, :status, :start_time, :end_time,
                       :latency_ms, :model, :tags, :metadata, 1, 1)"""
            ),
            traces,
        )
        db.execute(
            text(
                """INSERT INTO spans (trace_id, span_id, parent_id, name, kind, start_time, end_time, status, attributes)
                   VALUES (:trace_id, :span_id, :parent_id, :name, :kind, :start_time, :end_time, 'OK', :attributes)"""
            ),
            spans,
        )
        db.execute(
            text(
                """INSERT INTO scores (id, trace_id, session_id, user_id, name, value, data_type, source, created,
                       updated, metadata, scored_by, version, delivered_version, eval_seen_version,
                       review_seen_version)
                   VALUES (:id, :trace_id, NULL, NULL, :name, :value, :data_type, :source, :created, :created,
                       :metadata, :scored_by, 1, 1, 1, 1)"""
            ),
            scores,
        )
        db.execute(
            text(
                """INSERT INTO review_items (id, trace_id, queue, reason, created, state, calibration, sample_rate,
                       added_by, finished)
                   VALUES (:id, :trace_id, :queue, :reason, :created, :state, :calibration, :sample_rate,
                       :added_by, CASE WHEN :state = 'done' THEN :created END)"""
            ),
            items,
        )
        db.execute(
            text(
                """INSERT INTO reviews (trace_id, reviewer, corrected_answer, note, labels, created, updated)
                   VALUES (:trace_id, :reviewer, :corrected_answer, :note, :labels, :created, :updated)"""
            ),
            reviews,
        )
    with store.engine.connect() as db:
        db.exec_driver_sql("ANALYZE")
    return {
        "traces": len(traces),
        "scores": len(scores),
        "labels": 2 * len(done),
        "reviewed turns": len(done),
        "queue items": len(items),
    }


def _score(
    sid: str,
    tid: str,
    name: str,
    value: float,
    data_type: str,
    source: str,
    by: str,
    at: float,
    metadata: Any,
) -> dict[str, Any]:
    return {
        "id": sid, "trace_id": tid, "name": name, "value": value, "data_type": data_type, "source": source,
        "created": _iso(at), "metadata": metadata, "scored_by": by,
    }  # fmt: skip


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """Median and p95 in ms over `runs` calls (after one warm call), and the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], result


def report(name: str, median: float, p95: float, target: float | None) -> bool:
    verdict = "" if target is None else ("  PASS" if p95 < target else "  FAIL")
    print(f"  {name:<58} median {median:7.1f} ms   p95 {p95:7.1f} ms{verdict}")
    return target is None or p95 < target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="SQLite file to build or reuse (default: a temp file)")
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--reviewed", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--target-ms", type=float, default=200.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "review.sqlite3"
        fresh = not path.exists()
        store = Store(path)
        if fresh:
            t0 = time.perf_counter()
            counts = build(store, args.turns, args.reviewed)
            print(f"Built in {time.perf_counter() - t0:.1f} s: {counts}")
        else:
            print(f"Reusing {path}")
        queue = ReviewQueue(store)
        ok = True
        print(f"SQLite, {args.turns:,} traces (median and p95 of {args.runs} runs, after a warm one):")

        reviewers = ["ann", "bob"]
        turn = {"n": 0}

        def next_item() -> Any:
            who = reviewers[turn["n"] % 2]
            turn["n"] += 1
            item = queue.claim(who)
            if item is not None:
                queue.skip(item.id, who)  # out of the queue: the next claim takes a fresh one
            return item

        # The claim alone (the skip after it is timed apart).
        claims, skips = [], []
        for n in range(args.runs + 1):
            who = reviewers[n % 2]
            t0 = time.perf_counter()
            item = queue.claim(who)
            t1 = time.perf_counter()
            assert item is not None, "the queue ran dry: build with more turns"
            queue.skip(item.id, who)
            t2 = time.perf_counter()
            if n:
                claims.append((t1 - t0) * 1000)
                skips.append((t2 - t1) * 1000)
        for name, values, target in (
            ("next item: ReviewQueue.claim", claims, args.target_ms),
            ("skip", skips, None),
        ):
            values.sort()
            ok &= report(name, statistics.median(values), values[int(len(values) * 0.95)], target)

        def page() -> str:
            progress = queue.progress()
            item = queue.claim("cy")
            html = item_html(store, item) if item is not None else ""
            if item is not None:
                queue.skip(item.id, "cy")
            return progress_markdown(progress) + html

        median, p95, _ = timed(page, args.runs)
        ok &= report("the Review tab's next page (progress + claim + item)", median, p95, args.target_ms)
        median, p95, _ = timed(queue.progress, args.runs)
        report("progress per queue", median, p95, None)

        from evals.judge_trust import judge_trust

        median, p95, verdicts = timed(lambda: judge_trust(store, JUDGES), max(5, args.runs // 10))
        ok &= report("agreement page: judge_trust (both judges, bootstrap)", median, p95, args.target_ms)
        for name, v in verdicts.items():
            n = v.agreement.n if v.agreement is not None else 0
            print(f"    {name}: {v.status}, {n:,} labels paired")
        median, p95, pairs = timed(queue.label_pairs, max(5, args.runs // 10))
        ok &= report(
            f"agreement query alone: ReviewQueue.label_pairs ({len(pairs):,} pairs)",
            median,
            p95,
            args.target_ms,
        )

        def save_one() -> Any:
            item = queue.claim("dee")
            return queue.save(
                item.id, "dee", [Label("helpfulness", "NUMERIC", 0.5), Label("safety", "BOOLEAN", 1.0)]
            )

        median, p95, _ = timed(save_one, max(10, args.runs // 5))
        report("claim + save a review (2 labels)", median, p95, None)

        rules = ReviewRules(store, RULES)
        trace_ids = [r["id"] for r in store.rows("SELECT id FROM traces ORDER BY start_time DESC LIMIT 200")]
        with store.transaction() as db:
            db.execute(
                text("UPDATE scores SET version = version + 1 WHERE trace_id = :t AND name = 'helpfulness'"),
                [{"t": t} for t in trace_ids],
            )
        t0 = time.perf_counter()
        rules.sweep()
        took = (time.perf_counter() - t0) * 1000
        report("a rules sweep over 200 changed judge scores (once)", took, took, None)
        store.close()
    print("All within target." if ok else "Some timings are over target.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
