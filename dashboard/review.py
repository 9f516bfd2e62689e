"""The dashboard's Review tab: thin handlers over feedback.review_queue and evals.review_rules.

Who may use it: the owner and ADMIN_USERS (Access.viewer), and REVIEWERS (Access.reviewer),
who see this tab and nothing else. Each handler asks again; the item a reviewer holds is kept in
a gr.State, which only the server writes. Labels are shown with the judge's own type (a choice
of 0..1 in tenths for NUMERIC, true/false for BOOLEAN, the categories for CATEGORICAL), each
choice with its key; the judges' scores appear only after the label is saved.

Keys (the page lists them; REVIEW_KEYS_JS): a digit sets the highlighted label and moves to the
next one (BOOLEAN 1 true / 0 false; NUMERIC 0 = 0, 1 = 1, 2-9 = 0.2-0.9; CATEGORICAL the n-th
category), ↑/↓ move between labels, Enter (Ctrl+Enter inside a text box) saves and opens the
next item, s skips it, c and n go to the corrected answer and the note, Esc leaves a text box.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from config.settings import Settings
from dashboard.access import Access, Viewer, client_key
from dashboard.review_view import item_html, progress_markdown, reveal_html
from dashboard.trace_view import message_html
from evals.config import EvaluatorsError, ReviewConfig, load_evaluators_file
from evals.review_rules import LabelSpec, add_by_hand, label_specs
from feedback.review_queue import ReviewError, ReviewItem, ReviewQueue
from feedback.store import Store, StoreError

log = logging.getLogger(__name__)

__all__ = [
    "ALL_QUEUES",
    "KEYS_HELP",
    "RESET_JS",
    "REVIEW_KEYS_JS",
    "ReviewHandlers",
    "ReviewTab",
    "build_review_tab",
    "wire_review_tab",
]

ALL_QUEUES = "(all queues)"
BUSY = "The dashboard is busy with other requests; try again in a moment."

KEYS_HELP = """**Keys** (when no text box has the cursor):
**digits** set the highlighted label and move to the next one (true/false: **1** / **0**;
0 to 1: **0** = 0, **1** = 1, **2**–**9** = 0.2–0.9; categories: their number) ·
**↑** / **↓** move between labels · **Enter** saves and opens the next item
(**Ctrl+Enter** inside a text box) · **s** skips it · **c** corrected answer · **n** note ·
**Esc** leaves a text box. The judges' scores are shown after you save, so they do not sway you."""

# One listener for the page; it acts only while the Review tab's Save button is on screen.
REVIEW_KEYS_JS = """() => {
  if (window.__reviewKeys) return;
  window.__reviewKeys = true;
  let current = 0;
  const visible = (el) => !!el && el.offsetParent !== null;
  const labels = () => [...document.querySelectorAll('#rv-labels [id^="rv-label-"]')].filter(visible);
  const mark = () => labels().forEach((el, i) => el.classList.toggle('rv-current', i === current));
  const press = (selector) => { const b = document.querySelector(selector); if (visible(b)) b.click(); };
  const focusBox = (selector) => { const box = document.querySelector(selector); if (box) box.focus(); };
  window.__reviewReset = () => { current = 0; setTimeout(mark, 50); };
  document.addEventListener('keydown', (ev) => {
    if (!visible(document.querySelector('#rv-save'))) return;
    const t = ev.target;
    const typing = !!t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
      (t.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(t.type)));
    if (ev.key === 'Enter' && (!typing || ev.ctrlKey || ev.metaKey)) {
      if (typing && t.closest && !t.closest('#rv-corrected, #rv-note')) return;
      ev.preventDefault();
      if (typing) t.blur();  // the next answer's labels take the digits, not the box
      press('#rv-save'); current = 0; setTimeout(mark, 50); return;
    }
    if (typing) { if (ev.key === 'Escape') t.blur(); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const all = labels();
    if (ev.key === 's') { ev.preventDefault(); press('#rv-skip'); current = 0; setTimeout(mark, 50); return; }
    if (ev.key === 'c') { ev.preventDefault(); focusBox('#rv-corrected textarea'); return; }
    if (ev.key === 'n') { ev.preventDefault(); focusBox('#rv-note textarea'); return; }
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      if (!all.length) return;
      ev.preventDefault();
      current = (current + (ev.key === 'ArrowDown' ? 1 : all.length - 1)) % all.length; mark(); return;
    }
    if (/^[0-9]$/.test(ev.key) && all.length) {
      const group = all[Math.min(current, all.length - 1)];
      const choice = [...group.querySelectorAll('label')].find(
        (l) => (l.innerText || '').trim().startsWith(ev.key + ' ·'));
      if (!choice) return;
      ev.preventDefault();
      const input = choice.querySelector('input');
      (input || choice).click();
      if (current < all.length - 1) current += 1;
      mark();
    }
  });
}"""


# After an item is drawn: the first label is the highlighted one again.
RESET_JS = "() => { if (window.__reviewReset) window.__reviewReset(); }"


def _lease_owner(viewer: Viewer, request: Any) -> str:
    """Who holds a lease: the HF user, the owner, or this password session (two people who both
    know the password are two reviewers: they never get the same item)."""
    if viewer.how == "password":
        session = str(getattr(request, "session_hash", "") or "")[:8] or "session"
        return f"admin-{session}"
    return viewer.name


@dataclass
class ReviewTab:
    """The tab's components, in the order the handlers return them (`outputs`)."""

    queue: Any
    progress: Any
    status: Any
    item: Any
    labels: list[Any]
    corrected: Any
    note: Any
    reveal: Any
    item_id: Any
    tab: Any = None
    extra: list[Any] = field(default_factory=list)

    def outputs(self) -> list[Any]:
        return [
            self.queue,
            self.progress,
            self.status,
            self.item,
            *self.labels,
            self.corrected,
            self.note,
            self.reveal,
            self.item_id,
        ]


def review_config(settings: Settings) -> tuple[list[LabelSpec], ReviewConfig, str | None]:
    """The label controls and rules from the evaluators file; a sentence when there is none."""
    path: Path | None = settings.evaluators_file
    if path is None:
        return [], ReviewConfig(), "No judge to label: evaluation is off (EVALUATORS_FILE=off)."
    try:
        file = load_evaluators_file(path)
    except EvaluatorsError as exc:
        return [], ReviewConfig(), f"No judge to label: {exc}"
    specs = label_specs(file)
    note = (
        None
        if specs
        else f"No LLM judge of turns in {path}: only a corrected answer and a note can be given."
    )
    return specs, file.review, note


class ReviewHandlers:
    """The Review tab's handlers; each asks Access who is calling before it reads anything."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        access: Access,
        slots: threading.BoundedSemaphore | None = None,
    ) -> None:
        self.store = store
        self.queue = ReviewQueue(store)
        self.access = access
        self.specs, self.config, self.note = review_config(settings)
        self._slots = slots or threading.BoundedSemaphore(2)

    # ----- helpers -----------------------------------------------------------------------

    def _who(self, request: Any, profile: Any, grant: Any, what: str) -> Viewer | None:
        viewer = self.access.reviewer(request, profile, grant)
        if viewer is None:
            log.info(
                "Dashboard: %s refused to %s",
                what,
                client_key(request, self.access.settings.trusted_proxy_hops),
            )
        return viewer

    def refused(self, text: str) -> list[Any]:
        """Nothing of the queue: every output empty, the sentence in the status line."""
        return [
            gr.update(choices=[ALL_QUEUES], value=ALL_QUEUES),
            "",
            text,
            message_html(text),
            *[gr.update(value=None) for _ in self.specs],
            gr.update(value=""),
            gr.update(value=""),
            "",
            None,
        ]

    def _queue_name(self, queue: Any) -> str | None:
        return queue if isinstance(queue, str) and queue and queue != ALL_QUEUES else None

    def _page(self, owner: str, queue: Any, status: str, reveal: str | None) -> list[Any]:
        """Claim the reviewer's next item (theirs again if they hold one) and draw the tab."""
        progress = self.queue.progress()
        names = [p["queue"] for p in progress]
        wanted = self._queue_name(queue)
        if wanted is not None and wanted not in names:
            wanted = None
        item = self.queue.claim(owner, queue=wanted, lease_s=self.config.lease_s)
        choices = gr.update(choices=[ALL_QUEUES, *names], value=wanted or ALL_QUEUES)
        if item is None:
            where = f"the queue {wanted}" if wanted else "the review queue"
            html = message_html(f"Nothing left to review in {where}. Thank you!")
            if not status:
                status = f"Nothing left to review in {where}."
        else:
            html = item_html(self.store, item, self._position(progress, item))
        if self.note and item is not None:
            status = f"{status} {self.note}".strip()
        return [
            choices,
            progress_markdown(progress),
            status,
            html,
            *[gr.update(value=None) for _ in self.specs],
            gr.update(value=""),
            gr.update(value=""),
            gr.update() if reveal is None else reveal,
            None if item is None else item.id,
        ]

    @staticmethod
    def _position(progress: list[dict[str, Any]], item: ReviewItem) -> str:
        mine = next((p for p in progress if p["queue"] == item.queue), None)
        if mine is None:
            return ""
        return f"{mine['done']} of {mine['total']} done in this queue"

    def _guarded(self, work: Callable[[], list[Any]]) -> list[Any]:
        if not self._slots.acquire(blocking=False):
            return [gr.update(), gr.update(), BUSY, *[gr.update()] * (len(self.refused("")) - 3)]
        try:
            return work()
        except StoreError as exc:
            log.exception("Review: the store could not be read or written")
            return [
                gr.update(),
                gr.update(),
                f"⚠️ The store failed ({exc.reason}); nothing was lost on this page. Try again in a moment.",
                *[gr.update()] * (len(self.refused("")) - 3),
            ]
        finally:
            self._slots.release()

    # ----- handlers ----------------------------------------------------------------------

    def open(
        self,
        queue: Any,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> list[Any]:
        """The reviewer's current or next item (the tab opened, a queue picked, Next pressed)."""
        viewer = self._who(request, profile, grant, "review queue")
        if viewer is None:
            return self.refused(self.access.refusal())
        return self._guarded(lambda: self._page(_lease_owner(viewer, request), queue, "", None))

    def open_for_reviewer(
        self,
        queue: Any,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> list[Any]:
        """On page load: a reviewer's page is the Review tab, so their item is handed out at
        once; an admin's is not (they may never open the tab, and would hold an item)."""
        viewer = self.access.reviewer(request, profile, grant)
        if viewer is None or viewer.is_admin:
            return [gr.update()] * len(self.refused(""))
        return self._guarded(lambda: self._page(_lease_owner(viewer, request), queue, "", None))

    def save(self, *args: Any) -> list[Any]:
        """Save the labels, corrected answer and note of the held item; show the judges' scores
        of that answer; open the next item. Arguments: item id, queue, one value per label,
        corrected answer, note, grant, then the request and profile Gradio injects."""
        n = len(self.specs)
        args = (*args, *[None] * max(0, n + 7 - len(args)))
        item_id, queue, values = args[0], args[1], list(args[2 : 2 + n])
        corrected, note, grant, request, profile = args[2 + n : 7 + n]
        viewer = self._who(request, profile, grant, "review save")
        if viewer is None:
            return self.refused(self.access.refusal())
        return self._guarded(lambda: self._save(viewer, request, item_id, queue, values, corrected, note))

    def save_handler(self) -> Callable[..., list[Any]]:
        """`save` with one named parameter per input, so that Gradio injects the request and the
        signed-in profile (it looks for them among positional parameters by type)."""

        def save(*args: Any) -> list[Any]:
            return self.save(*args)

        plain = inspect.Parameter.POSITIONAL_OR_KEYWORD
        names = [
            "item_id",
            "queue",
            *[f"label_{n}" for n in range(len(self.specs))],
            "corrected",
            "note",
            "grant",
        ]
        params = [inspect.Parameter(name, plain) for name in names]
        params += [
            inspect.Parameter("request", plain, default=None, annotation=gr.Request),
            inspect.Parameter("profile", plain, default=None, annotation=gr.OAuthProfile | None),
        ]
        save.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        save.__annotations__ = {"request": gr.Request, "profile": gr.OAuthProfile | None}
        return save

    def _save(
        self,
        viewer: Viewer,
        request: Any,
        item_id: Any,
        queue: Any,
        values: list[Any],
        corrected: Any,
        note: Any,
    ) -> list[Any]:
        keep = [gr.update()] * len(self.refused(""))
        if not isinstance(item_id, str) or not item_id:
            keep[2] = "There is no item to save: press Next item."
            return keep
        try:
            labels = [
                label for spec, value in zip(self.specs, values, strict=True) if (label := spec.parse(value))
            ]
            item = self.queue.get(item_id)
            if item is None:
                raise ReviewError("That item is not in the queue any more; here is the next one.")
            owner = _lease_owner(viewer, request)
            saved = self.queue.save(
                item_id,
                owner,
                labels,
                corrected_answer=corrected if isinstance(corrected, str) else None,
                note=note if isinstance(note, str) else None,
            )
        except ReviewError as exc:
            keep[2] = f"⚠️ Not saved: {exc}"
            return keep
        what = f"{len(saved.labels)} label{'s' if len(saved.labels) != 1 else ''}"
        if saved.corrected_answer:
            what += " and a corrected answer"
        status = f"Saved {what}."
        if saved.taken_by:
            status += f" (Your time on it had run out and {saved.taken_by} has it now; your labels are kept.)"
        reveal = reveal_html(self.store, saved.trace_id, item.reason, [label.name for label in labels])
        return self._page(owner, queue, status, reveal)

    def skip(
        self,
        item_id: Any,
        queue: Any,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> list[Any]:
        """Leave the held item unlabelled (it leaves the queue as skipped) and open the next."""
        viewer = self._who(request, profile, grant, "review skip")
        if viewer is None:
            return self.refused(self.access.refusal())

        def work() -> list[Any]:
            owner = _lease_owner(viewer, request)
            status = "Skipped."
            if not isinstance(item_id, str) or not item_id or not self.queue.skip(item_id, owner):
                status = "Nothing to skip here (another reviewer has that item, or it is done)."
            return self._page(owner, queue, status, "")

        return self._guarded(work)

    def add_to_queue(
        self,
        trace_id: Any,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> str:
        """The trace viewer's "Add to review queue" (admins only: a reviewer has no trace viewer)."""
        viewer = self.access.viewer(request, profile, grant)
        if viewer is None:
            return self.access.refusal()
        if not isinstance(trace_id, str) or not trace_id.strip():
            return "Open a trace first (its id goes in the box above)."
        trace_id = trace_id.strip()
        if len(trace_id) > 200 or not trace_id.isprintable():
            return "That is not a trace id (trace ids have 32 hexadecimal characters)."
        try:
            _added, sentence = add_by_hand(self.queue, trace_id, viewer.name)
        except StoreError as exc:
            return f"The store could not be written ({exc.reason}). Try again in a moment."
        return sentence


def build_review_tab(handlers: ReviewHandlers) -> ReviewTab:
    """The tab's components (call inside `with gr.Tab("Review")`); the events are wired by
    `wire_review_tab` once the grant state exists."""
    gr.Markdown(KEYS_HELP, elem_id="rv-keys")
    with gr.Row():
        queue = gr.Dropdown(
            [ALL_QUEUES],
            value=ALL_QUEUES,
            label="Queue",
            elem_id="rv-queue",
            allow_custom_value=True,
            scale=3,
        )
        next_btn = gr.Button("Next item", elem_id="rv-next", scale=1)
    progress = gr.Markdown("", elem_id="rv-progress")
    status = gr.Markdown("", elem_id="rv-status")
    with gr.Row():
        with gr.Column(scale=3):
            item = gr.HTML(message_html("Open this tab to get an answer to review."), elem_id="rv-item")
        with gr.Column(scale=2, elem_id="rv-labels"):
            labels = []
            for n, spec in enumerate(handlers.specs):
                labels.append(
                    gr.Radio(
                        spec.choices(),
                        value=None,
                        label=f"{spec.name} ({spec.data_type.lower()})",
                        elem_id=f"rv-label-{n}",
                        elem_classes="rv-label",
                    )
                )
            if handlers.note:
                gr.Markdown(handlers.note, elem_id="rv-no-labels")
            corrected = gr.Textbox(
                label="Corrected answer (optional: what the answer should have been)",
                lines=4,
                elem_id="rv-corrected",
            )
            note = gr.Textbox(label="Note (optional)", lines=2, elem_id="rv-note")
            with gr.Row():
                save_btn = gr.Button("Save and next (Enter)", variant="primary", elem_id="rv-save")
                skip_btn = gr.Button("Skip (s)", elem_id="rv-skip")
    reveal = gr.HTML("", elem_id="rv-reveal")
    item_id = gr.State(None)
    tab = ReviewTab(queue, progress, status, item, labels, corrected, note, reveal, item_id)
    tab.extra = [next_btn, save_btn, skip_btn]
    return tab


def wire_review_tab(
    demo: gr.Blocks, handlers: ReviewHandlers, tab: ReviewTab, grant: Any, private: dict[str, Any]
) -> None:
    next_btn, save_btn, skip_btn = tab.extra
    outputs = tab.outputs()
    opened = {"fn": handlers.open, "inputs": [tab.queue, grant], "outputs": outputs, **private}
    reset = RESET_JS
    next_btn.click(**opened).then(None, js=reset)
    tab.queue.input(**opened).then(None, js=reset)
    if tab.tab is not None:
        tab.tab.select(**opened).then(None, js=reset)
    save_btn.click(
        handlers.save_handler(),
        [tab.item_id, tab.queue, *tab.labels, tab.corrected, tab.note, grant],
        outputs,
        **private,
    ).then(None, js=reset)
    skip_btn.click(handlers.skip, [tab.item_id, tab.queue, grant], outputs, **private).then(None, js=reset)
    demo.load(None, None, None, js=REVIEW_KEYS_JS)
