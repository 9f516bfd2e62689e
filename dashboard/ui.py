"""The dashboard page (/dashboard): thin Gradio handlers over dashboard.queries, each guarded.

Every handler starts by asking `Access` who is calling (from gr.Request, gr.OAuthProfile and
the password grant this session holds) and, when the answer is nobody, returns the refusal
sentence and empty outputs: no number, no row, no trace. The handlers are also hidden from the
API page (api_visibility="private"), which only keeps them out of sight: the checks are the
defence. Initial values of every component are empty, so the page config holds no data either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from config.settings import Settings
from dashboard import charts, queries
from dashboard.access import Access, Front, Viewer, client_key
from dashboard.bidi import visible_controls
from dashboard.experiment import experiment_page, no_experiment_html
from dashboard.judges import judges_data, judges_html, trust_marker
from dashboard.review import RESET_JS, ReviewHandlers, build_review_tab, wire_review_tab
from dashboard.trace_view import message_html, trace_html
from evals.compare import compare, describe
from evals.compare_plot import comparison_figure
from evals.config import Evaluator, EvaluatorsError, load_evaluators
from feedback.store import Store, StoreError

log = logging.getLogger(__name__)

__all__ = ["RANGES", "DashboardHandlers", "build_dashboard", "dashboard_link"]

DAY_S = 86400.0
RANGES = {"Last 24 hours": 1, "Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90}
DEFAULT_RANGE = "Last 7 days"
ALL = "(all)"
WORST_ROWS = 50
PAGE_PATH = "dashboard"
# Dashboard work never takes more than this many of the server's worker threads at once.
CONCURRENCY = 2
BUSY = "The dashboard is busy with other requests; try again in a moment."

_EMPTY_NOTE = "Nothing to show for this range and these filters."
_NO_TRACE = "Pick an answer in Worst answers, or paste a trace id."
# The x axis of every time chart: days or hours, always UTC (the store's days are UTC days).
TIME_AXIS = "time (UTC)"


def _nothing_is_no_value(value: Any) -> Any:
    """An empty table as no value: Gradio then shows an empty box (and the note under the chart
    says why) instead of bare axes that look like a broken chart."""
    return None if isinstance(value, pd.DataFrame) and value.empty else value


def _single_points(frame: pd.DataFrame, x: str, color: str | None) -> bool:
    """Whether a series of this chart has a single point in time (a line through it is not drawn)."""
    if color:
        return bool((frame.groupby(color, sort=False)[x].nunique() < 2).any())
    return frame[x].nunique() < 2


def _drawn(plot: Any, *, points_when_single: bool = False) -> Any:
    """A Gradio native plot that shows an empty box for an empty table and, for a line chart,
    draws points instead of lines while a series has a single point in time: Vega draws no line
    through one point, so the first day of data (or a model new today) was an empty chart.

    Gradio takes the mark from the plot's value (PlotData.mark), so it is chosen per update. Done
    on the instance: a Component subclass makes Gradio write a .pyi stub next to this file at
    import, which fails where the project's folder is read-only.
    """
    draw = plot.postprocess

    def postprocess(value: Any) -> Any:
        value = _nothing_is_no_value(value)
        data = draw(value)
        if (
            points_when_single
            and isinstance(value, pd.DataFrame)
            and data is not None
            and not isinstance(data, dict)
            and _single_points(value, plot.x, plot.color)
        ):
            data = data.model_copy(update={"mark": "point"})
        return data

    plot.postprocess = postprocess
    return plot


def bar_plot(**kwargs: Any) -> gr.BarPlot:
    """Gradio's bar chart; an empty table is no value."""
    return _drawn(gr.BarPlot(**kwargs))


def line_plot(**kwargs: Any) -> gr.LinePlot:
    """Gradio's line chart; points while a series has one point in time, no value when empty."""
    return _drawn(gr.LinePlot(**kwargs), points_when_single=True)


@dataclass
class Outputs:
    """The components a refresh fills, in the order the handler returns them."""

    gate: Any
    content: Any
    signout: Any
    headline: Any
    plots: list[Any]
    worst: Any
    worst_ids: Any
    model: Any
    user: Any
    tag: Any
    runs: Any
    run_a: Any
    run_b: Any
    notes: list[Any]
    runs_note: Any
    run_names: Any
    run_items: Any
    run_item_ids: Any
    # Each judge's trust (agreement with reviewers) and corrected quality estimate.
    judges: Any
    # The filters and headline: only admins see them (a reviewer's page is the Review tab).
    admin_bar: Any

    def all(self) -> list[Any]:
        return [
            self.gate,
            self.content,
            self.signout,
            self.headline,
            *self.plots,
            self.worst,
            self.worst_ids,
            self.model,
            self.user,
            self.tag,
            self.runs,
            self.run_a,
            self.run_b,
            *self.notes,
            self.runs_note,
            self.run_names,
            self.run_items,
            self.run_item_ids,
            self.judges,
            self.admin_bar,
        ]


ADMIN_TABS = 4  # Overview, Worst answers, Trace, Dataset runs: hidden on a reviewer's page


PLOT_COUNT = 8
# The charts in the order a refresh returns their tables (and charts.chart_notes their notes).
NOTE_ORDER = ["turns", "likes", "reasons", "evaluators", "latency", "tokens", "cost", "errors"]
RUN_ITEMS_LABEL = "Items of the run (click a run above)"


def _shown(values: list[str]) -> list[tuple[str, str]]:
    """Dropdown choices as (what is shown, the value): names from the store are shown with their
    bidirectional controls visible, and still filter by the name itself."""
    return [(visible_controls(v), v) for v in values]


def _range_days(range_name: Any) -> int:
    """The days of a time range's name (the default range's for anything else)."""
    return RANGES.get(range_name if isinstance(range_name, str) else "", RANGES[DEFAULT_RANGE])


def _choice(value: Any) -> str | None:
    """A filter dropdown's value as a filter (None: no filter); anything but text is ignored."""
    if not isinstance(value, str) or not value or value == ALL:
        return None
    return value


class DashboardHandlers:
    """The dashboard's event handlers; each checks the caller before it reads the store."""

    def __init__(
        self, store: Store, settings: Settings, access: Access, clock: Callable[[], float] = time.time
    ):
        self.store = store
        self.settings = settings
        self.access = access
        self.clock = clock
        # The queue runs at most CONCURRENCY handlers, but /gradio_api/run/ calls a handler at
        # once, outside it: the handlers hold a slot of their own while they read the store, and
        # answer BUSY rather than wait (a waiting thread is one the chat cannot have).
        self._slots = threading.BoundedSemaphore(CONCURRENCY)
        # The Review tab (admins and REVIEWERS), sharing the slots.
        self.review = ReviewHandlers(store, settings, access, self._slots)
        self.evaluators = _evaluators(settings)
        # The A/B experiment of VARIANTS_FILE (config.variants): its tab exists only with one.
        self.experiment = getattr(settings, "experiment", None)

    # ----- access ------------------------------------------------------------------------

    def _viewer(self, request: Any, profile: Any, grant: Any, what: str) -> Viewer | None:
        viewer = self.access.viewer(request, profile, grant)
        if viewer is None:
            log.info(
                "Dashboard: %s refused to %s",
                what,
                client_key(request, self.access.settings.trusted_proxy_hops),
            )
        return viewer

    def _gate_text(self, viewer: Viewer | None) -> str:
        if viewer is None:
            return self.access.refusal()
        if not viewer.is_admin:
            return f"Review · {viewer.describe()}"
        return f"Dashboard · {viewer.describe()}"

    def _login_visible(self, viewer: Viewer | None) -> bool:
        return viewer is None and self.access.gate.enabled

    # ----- page --------------------------------------------------------------------------

    def link(
        self,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> str:
        """The chat page's link to the dashboard, shown only to whoever may open it (a reviewer's
        says Review queue: it opens on the Review tab, all they may see)."""
        viewer = self.access.reviewer(request, profile, None)
        if viewer is None:
            return ""
        text = "Dashboard" if viewer.is_admin else "Review queue"
        # A new tab: the chat and its unrated answers stay where they were.
        return f'<a href="{PAGE_PATH}" id="dash-link-a" target="_blank" rel="noopener">{text}</a>'

    def refused(self, viewer: Viewer | None) -> list[Any]:
        """What every output of a refresh gets for a caller who may not look: nothing."""
        return [
            self._gate_text(viewer),
            gr.update(visible=False),
            gr.update(visible=False),
            "",
            *[None] * PLOT_COUNT,
            pd.DataFrame(columns=charts.WORST_COLUMNS),
            [],
            gr.update(choices=[ALL], value=ALL),
            gr.update(choices=[ALL], value=ALL),
            gr.update(choices=[ALL], value=ALL),
            pd.DataFrame(columns=charts.RUN_COLUMNS),
            gr.update(choices=[], value=None),
            gr.update(choices=[], value=None),
            *[gr.update(value="")] * PLOT_COUNT,
            gr.update(value=""),
            gr.update(value=[]),
            gr.update(value=pd.DataFrame(columns=charts.RUN_ITEM_COLUMNS), label=RUN_ITEMS_LABEL),
            gr.update(value=[]),
            gr.update(value=""),  # the judges' panel
            gr.update(visible=False),  # the filters bar
        ]

    def reviewer_page(self, viewer: Viewer) -> list[Any]:
        """A reviewer's page: nothing of the dashboard's figures (`refused`), no filters; the
        other tabs go in `layout`."""
        out = self.refused(viewer)
        out[1] = gr.update(visible=True)
        return out

    def layout(
        self,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> list[Any]:
        """After the first refresh has put the tabs on screen (updates sent to tabs inside a
        column that is not shown yet are lost): a reviewer's page keeps the Review tab alone,
        selected. Everyone else's tabs stay as they are."""
        tabs = self.admin_tabs
        if self.access.viewer(request, profile, grant) is None and self.access.reviewer(
            request, profile, grant
        ):
            # A tab's button stays on screen with visible=False (gradio 6.31); "hidden" hides it.
            return [*[gr.update(visible="hidden")] * tabs, gr.Tabs(selected="review")]
        return [gr.update()] * (tabs + 1)

    @property
    def admin_tabs(self) -> int:
        """The tabs a reviewer's page hides: the four, and Experiment when there is one."""
        return ADMIN_TABS + (1 if self.experiment is not None else 0)

    def _filters(self, range_name: Any, model: Any, user: Any, tag: Any, session: Any) -> queries.Filters:
        days = _range_days(range_name)
        now = self.clock()
        session_id = session.strip() if isinstance(session, str) and session.strip() else None
        return queries.Filters(
            since=now - days * DAY_S,
            until=now + 60.0,
            model=_choice(model),
            user_id=_choice(user),
            tag=_choice(tag),
            session_id=session_id,
        )

    def refresh(
        self,
        range_name: Any,
        model: Any,
        user: Any,
        tag: Any,
        session: Any,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> list[Any]:
        """Every figure of the page for the chosen range and filters (one check, one round trip)."""
        viewer = self._viewer(request, profile, grant, "overview")
        if viewer is None:
            reviewer = self.access.reviewer(request, profile, grant)
            if reviewer is not None:
                return self.reviewer_page(reviewer)
            return self.refused(None)
        if not self._slots.acquire(blocking=False):
            return [BUSY, *[gr.update()] * (len(self.refused(None)) - 1)]
        try:
            return self._figures(viewer, range_name, model, user, tag, session)
        finally:
            self._slots.release()

    def _figures(
        self, viewer: Viewer, range_name: Any, model: Any, user: Any, tag: Any, session: Any
    ) -> list[Any]:
        try:
            filters = self._filters(range_name, model, user, tag, session)
            # A day or less by the hour: by the day it would be one or two points.
            data = queries.overview(self.store, filters, hourly=_range_days(range_name) <= 1)
            worst = queries.worst_answers(self.store, filters, WORST_ROWS)
            choices = queries.filter_choices(self.store)
            runs = queries.dataset_runs(self.store)
            panel = judges_data(self.store, self.evaluators, filters)
        except StoreError as exc:
            log.exception("Dashboard: the store could not be read")
            out = self.refused(viewer)
            out[0] = f"⚠️ The store could not be read ({exc.reason}). Try again in a moment."
            out[1] = gr.update(visible=True)
            return out
        except ValueError as exc:
            out = self.refused(viewer)
            out[0] = f"⚠️ {exc}"
            out[1] = gr.update(visible=True)
            return out
        # An unverified judge's scores say so wherever they are shown (its reason: the panel).
        trust = panel.trust_labels()
        for row in data["evaluators"]:
            row["evaluator"] = f"{row['evaluator']}{trust_marker(str(row['evaluator']), trust)}"
        for answer in worst:
            for judge in answer.get("judge") or []:
                judge["name"] = f"{judge['name']}{trust_marker(str(judge['name']), trust)}"
        per_day = data["per_day"]
        plots = [
            charts.turns_per_day(per_day),
            charts.like_rate_per_day(per_day),
            charts.dislike_reasons(data["dislike_reasons"]),
            charts.evaluator_means(data["evaluators"]),
            charts.latency_per_day(per_day),
            charts.tokens_per_day(per_day),
            charts.cost_per_day(per_day),
            charts.error_rate_per_day(per_day),
        ]
        table, ids = charts.worst_frame(worst)
        evaluation = self.settings.evaluators_file is not None
        headline = charts.headline(
            data["totals"], langfuse=self.settings.langfuse_enabled, evaluation=evaluation
        )
        if not per_day:
            headline = f"{_EMPTY_NOTE}\n\n{headline}"
        bucket = "hour" if data.get("bucket") == "hour" else "day"
        headline += f"\n\ncharts: one point or bar per **{bucket}** (UTC)"
        notes = charts.chart_notes(data, evaluation=evaluation)
        run_names = [r["name"] for r in runs]

        def dropdown(values: list[str], current: Any) -> Any:
            options = [ALL, *values]
            return gr.update(choices=_shown(options), value=current if current in options else ALL)

        return [
            self._gate_text(viewer),
            gr.update(visible=True),
            gr.update(visible=viewer.how == "password"),
            headline,
            *plots,
            table,
            ids,
            dropdown(choices.get("model", []), model),
            dropdown(choices.get("user_id", []), user),
            dropdown(choices.get("tag", []), tag),
            charts.runs_frame(runs),
            gr.update(choices=_shown(run_names), value=run_names[1] if len(run_names) > 1 else None),
            gr.update(choices=_shown(run_names), value=run_names[0] if run_names else None),
            *[gr.update(value=note) for note in notes],
            gr.update(value=charts.runs_note(runs)),
            gr.update(value=run_names),
            gr.update(),  # an open run stays open
            gr.update(),
            gr.update(value=judges_html(panel)),
            gr.update(visible=True),
        ]

    def sign_in(
        self,
        password: Any,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
    ) -> tuple[str, Any, str, Any]:
        """Check the password (limited tries); the box is always emptied, the text never echoed."""
        new_grant, message = self.access.sign_in(password, request)
        if new_grant is None:
            return "", grant, message, gr.update(visible=self.access.gate.enabled)
        return "", new_grant, "Signed in.", gr.update(visible=False)

    def sign_out(self, grant: Any) -> tuple[Any, ...]:
        """The grant ends, and the trace and comparison shown go too (the refresh that follows
        empties the rest): nothing seen stays in the page or in what Gradio keeps for it."""
        return (
            None,
            "Signed out.",
            gr.update(visible=self.access.gate.enabled),
            message_html(_NO_TRACE),
            "",
            "",
            None,
            gr.update(value=pd.DataFrame(columns=charts.RUN_ITEM_COLUMNS), label=RUN_ITEMS_LABEL),
            [],
        )

    def show_login(
        self,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> Any:
        viewer = self.access.viewer(request, profile, grant)
        return gr.update(visible=self._login_visible(viewer))

    # ----- the A/B experiment ------------------------------------------------------------

    def experiment_tab(
        self,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> str:
        """The Experiment tab (dashboard.experiment): each variant's figures, its verdict against
        the control, the check of the split. Admins only."""
        if self._viewer(request, profile, grant, "experiment") is None:
            return no_experiment_html(self.access.refusal())
        if self.experiment is None:
            return no_experiment_html("No experiment: VARIANTS_FILE is not set.")
        if not self._slots.acquire(blocking=False):
            return no_experiment_html(BUSY)
        try:
            return experiment_page(self.store, self.experiment, self.evaluators, now=self.clock())
        except StoreError as exc:
            log.exception("Dashboard: the store could not be read")
            return no_experiment_html(f"The store could not be read ({exc.reason}). Try again in a moment.")
        finally:
            self._slots.release()

    # ----- trace viewer ------------------------------------------------------------------

    def _trace(self, trace_id: Any) -> str:
        if not self._slots.acquire(blocking=False):
            return message_html(BUSY)
        try:
            base = self.settings.langfuse_base_url if self.settings.langfuse_enabled else None
            return trace_html(self.store, trace_id, langfuse_base_url=base)
        finally:
            self._slots.release()

    def open_trace(
        self,
        trace_id: Any,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> str:
        if self._viewer(request, profile, grant, "trace") is None:
            return message_html(self.access.refusal())
        return self._trace(trace_id)

    def pick_worst(
        self,
        ids: Any,
        grant: Any,
        evt: gr.SelectData,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> tuple[str, str, Any]:
        """A row of the worst answers opens its trace (the row's id is the server's, not the browser's)."""
        if self._viewer(request, profile, grant, "trace") is None:
            return message_html(self.access.refusal()), "", gr.update()
        return self._open_row(ids, evt)

    def _open_row(self, ids: Any, evt: Any) -> tuple[str, str, Any]:
        """The trace of the picked row, from the server's list of the table's trace ids."""
        row = _row(evt, ids)
        if row is None:
            return (
                message_html("That row is not in the table any more; refresh and pick again."),
                "",
                gr.update(),
            )
        if not ids[row]:
            return message_html("That item has no trace (it was not run)."), "", gr.update()
        trace_id = str(ids[row])
        return self._trace(trace_id), trace_id, gr.Tabs(selected="trace")

    # ----- dataset runs ------------------------------------------------------------------

    def pick_run(
        self,
        names: Any,
        grant: Any,
        evt: gr.SelectData,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> tuple[Any, list[str | None]]:
        """A row of the runs opens the run: its items (as `python -m evals dataset show`), each
        opening its trace. The run's name comes from the server's list, not from the browser."""
        empty = pd.DataFrame(columns=charts.RUN_ITEM_COLUMNS)
        if self._viewer(request, profile, grant, "dataset run") is None:
            return gr.update(value=empty, label=self.access.refusal()), []
        row = _row(evt, names)
        if row is None:
            return gr.update(
                value=empty, label="That run is not in the table any more; refresh and pick again."
            ), []
        name = str(names[row])
        if not self._slots.acquire(blocking=False):
            return gr.update(value=empty, label=BUSY), []
        try:
            items = queries.run_items(self.store, name)
        except StoreError as exc:
            log.exception("Dashboard: the store could not be read")
            return gr.update(value=empty, label=f"The store could not be read ({exc.reason})."), []
        finally:
            self._slots.release()
        graded = [i for i in items if i["correct"] is not None]
        right = sum(1 for i in graded if i["correct"])
        shown = visible_controls(name[:200])
        label = (
            f"Items of run {shown}: {right} right of {len(graded)} graded, {len(items)} in all. "
            "Click an item to open its trace."
            if items
            else f"Run {shown} has no items yet."
        )
        return gr.update(value=charts.run_items_frame(items), label=label), [i["trace_id"] for i in items]

    def pick_run_item(
        self,
        ids: Any,
        grant: Any,
        evt: gr.SelectData,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> tuple[str, str, Any]:
        """An item of the open run opens its trace (the id is the server's, not the browser's)."""
        if self._viewer(request, profile, grant, "trace") is None:
            return message_html(self.access.refusal()), "", gr.update()
        return self._open_row(ids, evt)

    def compare_runs(
        self,
        run_a: Any,
        run_b: Any,
        grant: Any,
        request: gr.Request = None,  # type: ignore[assignment]  # injected by Gradio
        profile: gr.OAuthProfile | None = None,
    ) -> tuple[str, Any]:
        """The CLI's comparison of two runs (python -m evals compare): its text and its chart."""
        if self._viewer(request, profile, grant, "run comparison") is None:
            return self.access.refusal(), None
        if not isinstance(run_a, str) or not isinstance(run_b, str) or not run_a or not run_b:
            return "Pick two runs to compare.", None
        if run_a == run_b:
            return "Pick two different runs: a run compared with itself shows no change.", None
        if not self._slots.acquire(blocking=False):
            return BUSY, None
        try:
            return self._comparison(run_a, run_b)
        finally:
            self._slots.release()

    def _comparison(self, run_a: str, run_b: str) -> tuple[str, Any]:
        try:
            known = {r["name"] for r in queries.dataset_runs(self.store)}
            missing = [name for name in (run_a, run_b) if name not in known]
            if missing:
                return f"No dataset run is named {missing[0][:200]!r}.", None
            result = compare(self.store, run_a, run_b)
        except StoreError as exc:
            log.exception("Dashboard: the store could not be read")
            return f"The store could not be read ({exc.reason}). Try again in a moment.", None
        # The chart draws the names with matplotlib, which reads $...$ in a label as math: a name
        # such as "$$" failed to draw and "${{{...$" recursed without end.
        return visible_controls(describe(result)), comparison_figure(result)


def _evaluators(settings: Settings) -> list[Evaluator]:
    """The judges the panel reports on; none when evaluation is off or the file is wrong (the
    app's start names the mistake)."""
    if settings.evaluators_file is None:
        return []
    try:
        return load_evaluators(settings.evaluators_file)
    except EvaluatorsError as exc:
        log.warning("Dashboard: no judges panel: %s", exc)
        return []


def _row(evt: Any, ids: Any) -> int | None:
    """The picked row's index when it is one of `ids` (the server's list), else None."""
    index = getattr(evt, "index", None)
    row = index[0] if isinstance(index, list | tuple) and index else index
    if (
        not isinstance(row, int)
        or isinstance(row, bool)
        or not isinstance(ids, list)
        or not 0 <= row < len(ids)
    ):
        return None
    return row


def dashboard_link(demo: gr.Blocks, handlers: DashboardHandlers) -> None:
    """On the chat page (inside its Blocks): a link to the dashboard, for those who may open it."""
    # A second page makes Gradio show a navigation bar; the chat keeps its look without it.
    gr.Navbar(visible="hidden")  # type: ignore[arg-type]  # False would not hide it (gradio 6.31)
    link = gr.HTML("", elem_id="dash-link", padding=False)
    demo.load(handlers.link, None, [link], api_visibility="private", queue=False, show_progress="hidden")


def build_dashboard(demo: gr.Blocks, handlers: DashboardHandlers) -> DashboardHandlers:
    """Add the dashboard page (/dashboard) to the app; call outside the Blocks' `with`."""
    access = handlers.access
    access.attach(
        lambda: Front(
            server_name=getattr(demo, "server_name", None),
            share=bool(getattr(demo, "share", False)),
            ssr=bool(getattr(demo, "ssr_mode", False)),
        )
    )
    private: dict[str, Any] = {
        "api_visibility": "private",
        "concurrency_limit": CONCURRENCY,
        "concurrency_id": "dashboard",
    }
    with demo.route("Dashboard", PAGE_PATH, show_in_navbar=False):
        gr.Navbar(visible="hidden")  # type: ignore[arg-type]  # False would not hide it (gradio 6.31)
        grant = gr.State(None)
        worst_ids = gr.State([])
        run_names = gr.State([])  # the runs table's run names, in order (kept on the server)
        run_item_ids = gr.State([])  # the open run's items' trace ids, in order
        gr.Markdown("## Dashboard\n[← back to the chat](./)")
        gate = gr.Markdown("Checking who you are…", elem_id="dash-gate")
        if access.hf_sign_in:
            gr.LoginButton()
        with gr.Row(visible=False, elem_id="dash-login") as login_row:
            password = gr.Textbox(
                label="Admin password", type="password", elem_id="dash-password", scale=3, max_lines=1
            )
            sign_in_btn = gr.Button("Sign in", elem_id="dash-sign-in", scale=1)
        login_note = gr.Markdown("", elem_id="dash-login-note")
        with gr.Column(visible=False, elem_id="dash-content") as content:
            with gr.Column(elem_id="dash-admin-bar") as admin_bar:
                with gr.Row():
                    range_box = gr.Dropdown(
                        list(RANGES), value=DEFAULT_RANGE, label="Time range", elem_id="dash-range"
                    )
                    model = gr.Dropdown([ALL], value=ALL, label="Model", allow_custom_value=True)
                    user = gr.Dropdown([ALL], value=ALL, label="User", allow_custom_value=True)
                    tag = gr.Dropdown([ALL], value=ALL, label="Tag", allow_custom_value=True)
                    session = gr.Textbox(label="Session id", placeholder="any", max_lines=1)
                with gr.Row():
                    refresh_btn = gr.Button("Refresh", elem_id="dash-refresh", variant="primary")
                    signout_btn = gr.Button("Sign out", visible=False, elem_id="dash-sign-out")
                headline = gr.Markdown("", elem_id="dash-headline")
            with gr.Tabs(elem_id="dash-tabs") as tabs:
                with gr.Tab("Overview", id="overview") as overview_tab:
                    note_of: dict[str, Any] = {}

                    def note(name: str) -> None:
                        """The sentence under a chart when it has nothing (visible) to draw."""
                        note_of[name] = gr.Markdown("", elem_id=f"note-{name}", elem_classes="dash-note")

                    # Numbers as "3,000", "25", "0.0001" (Vega wrote "25.000000" for a flat line).
                    time_axis: dict[str, Any] = {"x": "day", "x_title": TIME_AXIS, "y_axis_format": ",~r"}
                    with gr.Row():
                        with gr.Column():
                            turns_plot = bar_plot(
                                **time_axis, y="turns", color="model", title="Turns", elem_id="plot-turns"
                            )
                            note("turns")
                        with gr.Column():
                            errors_plot = line_plot(
                                **time_axis,
                                y="percent",
                                title="Error rate (%)",
                                tooltip=["day", "percent", "turns"],
                                elem_id="plot-errors",
                            )
                            note("errors")
                    with gr.Row():
                        with gr.Column():
                            like_plot = line_plot(
                                **time_axis,
                                y="percent",
                                color="series",
                                title="Like rate (%) from people's ratings, 95% interval",
                                tooltip=["day", "series", "percent", "ratings"],
                                y_lim=[0, 100],
                                elem_id="plot-likes",
                            )
                            note("likes")
                        with gr.Column():
                            reasons_plot = bar_plot(
                                # Bars side by side start from the smallest otherwise (stacked ones from 0).
                                y_lim=[0, None],
                                y_axis_format=",~r",
                                x="reason",
                                y="dislikes",
                                title="Dislike reasons (people's)",
                                elem_id="plot-reasons",
                            )
                            note("reasons")
                    # The two charts with a legend entry per evaluator or per model and percentile
                    # take the whole width: Vega lays a legend out in one row and cuts what overflows.
                    eval_plot = line_plot(
                        **time_axis,
                        y="mean",
                        color="evaluator",
                        title="Judges' and checks' mean score",
                        tooltip=["day", "evaluator", "mean", "scores"],
                        elem_id="plot-evaluators",
                    )
                    note("evaluators")
                    judges_box = gr.HTML("", elem_id="dash-judges-box", padding=False)
                    latency_plot = line_plot(
                        **time_axis,
                        y="ms",
                        color="series",
                        title="Latency p50 / p95 (ms)",
                        elem_id="plot-latency",
                    )
                    note("latency")
                    with gr.Row():
                        with gr.Column():
                            tokens_plot = bar_plot(
                                **time_axis,
                                y="tokens",
                                color="model",
                                title="Tokens by model",
                                tooltip=["day", "model", "tokens", "per turn"],
                                elem_id="plot-tokens",
                            )
                            note("tokens")
                        with gr.Column():
                            cost_plot = bar_plot(
                                **time_axis,
                                y="usd",
                                color="model",
                                title="Cost by model (USD, known prices only)",
                                tooltip=["day", "model", "usd", "per turn", "turns of unknown cost"],
                                elem_id="plot-cost",
                            )
                            note("cost")
                with gr.Tab("Worst answers", id="worst") as worst_tab:
                    gr.Markdown(
                        "Answers people disliked, newest first; then answers only a judge scored low "
                        "(a demo judge's low score alone lists nothing). Each judge's verdict and "
                        "reasoning is named. Click a row to open its trace."
                    )
                    worst = gr.Dataframe(
                        pd.DataFrame(columns=charts.WORST_COLUMNS),
                        interactive=False,
                        wrap=True,
                        elem_id="dash-worst",
                        datatype="str",
                        column_widths=["9%", "20%", "20%", "5%", "9%", "12%", "10%", "15%"],
                        max_height=700,
                    )
                with gr.Tab("Trace", id="trace") as trace_tab:
                    with gr.Row():
                        trace_id = gr.Textbox(label="Trace id", max_lines=1, elem_id="dash-trace-id", scale=4)
                        open_btn = gr.Button("Open", elem_id="dash-open-trace", scale=1)
                        add_review_btn = gr.Button("Add to review queue", elem_id="dash-add-review", scale=1)
                    add_review_note = gr.Markdown("", elem_id="dash-add-review-note")
                    trace_view = gr.HTML(
                        message_html(_NO_TRACE),
                        elem_id="dash-trace",
                    )
                with gr.Tab("Dataset runs", id="runs") as runs_tab:
                    runs_note = gr.Markdown("", elem_id="dash-runs-note")
                    runs = gr.Dataframe(
                        pd.DataFrame(columns=charts.RUN_COLUMNS),
                        interactive=False,
                        elem_id="dash-runs",
                        datatype="str",
                    )
                    run_items = gr.Dataframe(
                        pd.DataFrame(columns=charts.RUN_ITEM_COLUMNS),
                        label=RUN_ITEMS_LABEL,
                        show_label=True,
                        interactive=False,
                        wrap=True,
                        elem_id="dash-run-items",
                        datatype="str",
                        max_height=500,
                    )
                    with gr.Row():
                        run_a = gr.Dropdown(
                            [], label="Run A (before)", elem_id="dash-run-a", allow_custom_value=True
                        )
                        run_b = gr.Dropdown(
                            [], label="Run B (after)", elem_id="dash-run-b", allow_custom_value=True
                        )
                        compare_btn = gr.Button("Compare", elem_id="dash-compare")
                    comparison = gr.Textbox(
                        label="Comparison", lines=6, interactive=False, elem_id="dash-comparison"
                    )
                    # The same figure as `python -m evals compare --plot` (evals/compare_plot.py).
                    comparison_plot = gr.Plot(label="Comparison chart", elem_id="plot-run-compare")
                experiment_tab = experiment_box = experiment_btn = None
                if handlers.experiment is not None:
                    with gr.Tab(
                        "Experiment", id="experiment", elem_id="dash-tab-experiment"
                    ) as experiment_tab:
                        experiment_btn = gr.Button(
                            "Refresh the experiment", elem_id="dash-experiment-refresh"
                        )
                        experiment_box = gr.HTML(
                            "Open this tab to read the experiment.",
                            elem_id="dash-experiment-box",
                            padding=False,
                        )
                with gr.Tab("Review", id="review", elem_id="dash-tab-review") as review_tab:
                    review = build_review_tab(handlers.review)
                    review.tab = review_tab

        outputs = Outputs(
            gate=gate,
            content=content,
            signout=signout_btn,
            headline=headline,
            plots=[
                turns_plot,
                like_plot,
                reasons_plot,
                eval_plot,
                latency_plot,
                tokens_plot,
                cost_plot,
                errors_plot,
            ],
            worst=worst,
            worst_ids=worst_ids,
            model=model,
            user=user,
            tag=tag,
            runs=runs,
            run_a=run_a,
            run_b=run_b,
            notes=[note_of[name] for name in NOTE_ORDER],
            runs_note=runs_note,
            run_names=run_names,
            run_items=run_items,
            run_item_ids=run_item_ids,
            judges=judges_box,
            admin_bar=admin_bar,
        ).all()
        filters = [range_box, model, user, tag, session]
        show_login = {"fn": handlers.show_login, "inputs": [grant], "outputs": [login_row], **private}

        review_outputs = review.outputs()
        for_reviewer = {
            "fn": handlers.review.open_for_reviewer,
            "inputs": [review.queue, grant],
            "outputs": review_outputs,
            **private,
        }
        admin_tabs = [overview_tab, worst_tab, trace_tab, runs_tab]
        if experiment_tab is not None:
            admin_tabs.append(experiment_tab)
        layout = {
            "fn": handlers.layout,
            "inputs": [grant],
            "outputs": [*admin_tabs, tabs],
            **private,
        }
        demo.load(handlers.refresh, [*filters, grant], outputs, **private).then(**show_login).then(
            **layout
        ).then(**for_reviewer).then(None, js=RESET_JS)
        for trigger in (
            refresh_btn.click,
            range_box.input,
            model.input,
            user.input,
            tag.input,
            session.submit,
        ):
            trigger(handlers.refresh, [*filters, grant], outputs, **private)
        for trigger in (sign_in_btn.click, password.submit):
            trigger(
                handlers.sign_in, [password, grant], [password, grant, login_note, login_row], **private
            ).then(handlers.refresh, [*filters, grant], outputs, **private)
        signed_out = [
            grant,
            login_note,
            login_row,
            trace_view,
            trace_id,
            comparison,
            comparison_plot,
            run_items,
            run_item_ids,
        ]
        # Signed out, the Review tab is emptied too (its open handler refuses, with empty outputs).
        signed = (
            signout_btn.click(handlers.sign_out, [grant], signed_out, **private)
            .then(handlers.refresh, [*filters, grant], outputs, **private)
            .then(handlers.review.open, [review.queue, grant], review_outputs, **private)
        )
        if experiment_tab is not None:
            experiment = {
                "fn": handlers.experiment_tab,
                "inputs": [grant],
                "outputs": [experiment_box],
                **private,
            }
            experiment_tab.select(**experiment)
            experiment_btn.click(**experiment)
            # Signed out, the tab says so (its handler refuses) instead of keeping the figures.
            signed.then(**experiment)
        for trigger in (open_btn.click, trace_id.submit):
            trigger(handlers.open_trace, [trace_id, grant], [trace_view], **private)
        add_review_btn.click(handlers.review.add_to_queue, [trace_id, grant], [add_review_note], **private)
        wire_review_tab(demo, handlers.review, review, grant, private)
        worst.select(handlers.pick_worst, [worst_ids, grant], [trace_view, trace_id, tabs], **private)
        runs.select(handlers.pick_run, [run_names, grant], [run_items, run_item_ids], **private)
        run_items.select(
            handlers.pick_run_item, [run_item_ids, grant], [trace_view, trace_id, tabs], **private
        )
        compare_btn.click(
            handlers.compare_runs,
            [run_a, run_b, grant],
            [comparison, comparison_plot],
            **private,
        )
    return handlers
