"""The runner: plants canaries and listeners, drives each probe through the real chat path,
and judges blocked or breached (see tests/attacks/__init__.py)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.attacks import bombs, escapes, files, leaks, lingering, network, processes, sessions
from tests.attacks.probe import (
    BASE_SETTINGS,
    BOMB_APP_ADDRESS_SPACE,
    BROWSER_ID,
    HEX_VAR,
    INITIAL_CANARY_VAR,
    OTHER_TURN_LIMIT_S,
    PROJECT_ROOT,
    RESULT_PREFIX,
    SHORT_DIR_VAR,
    STOPPED,
    Probe,
    ProbeResult,
)

# Every probe, grouped by what it attacks (one module per group).
PROBES: list[Probe] = [
    *leaks.probes(),
    *escapes.probes(),
    *files.probes(),
    *processes.probes(),
    *network.probes(),
    *sessions.probes(),
    *lingering.probes(),
    *bombs.probes(),
]
BY_NAME = {probe.name: probe for probe in PROBES}
assert len(BY_NAME) == len(PROBES), "probe names must be unique"


# --------------------------------------------------------------------------------------------
# What the runner plants and watches
# --------------------------------------------------------------------------------------------


class Listener:
    """TCP, UDP, unix path and abstract unix listeners that record every contact."""

    def __init__(self, short_dir: Path) -> None:
        self.events: list[str] = []
        self._stop = threading.Event()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.abstract_name = f"attack-probe-{secrets.token_hex(6)}"
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen(8)
        self.unix_path = str(short_dir / "probe.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        self.unix.listen(8)
        self._kinds = {
            self.tcp: "TCP 127.0.0.1",
            self.udp: "UDP 127.0.0.1",
            self.abstract: "abstract unix socket",
            self.unix: "unix socket file",
        }
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _sweep(self, timeout: float) -> None:
        ready, _, _ = select.select(list(self._kinds), [], [], timeout)
        for sock in ready:
            try:
                if sock is self.udp:
                    sock.recvfrom(4096)
                else:
                    conn, _ = sock.accept()
                    conn.close()
            except OSError:
                continue
            self.events.append(self._kinds[sock])

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._sweep(0.1)

    def contacts(self) -> list[str]:
        """Every kind of listener that was contacted, queued contacts included."""
        self._stop.set()
        self.thread.join(2)
        self._sweep(0.05)
        return sorted(set(self.events))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        for sock in self._kinds:
            sock.close()


def _shared_markers(hex_: str) -> dict[str, Path]:
    """Marker files a breach would leave outside the probe's own temporary folder."""
    return {
        "marker_tmp": Path(tempfile.gettempdir()) / f"attack-marker-{hex_}.txt",
        "marker_project": PROJECT_ROOT / f"attack-marker-{hex_}.txt",
    }


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


class Context:
    """Paths, canaries, markers and listeners for one probe run; `tokens` fill the probe's code."""

    def __init__(self, tmp: Path) -> None:
        self.hex = os.environ.get(HEX_VAR) or secrets.token_hex(6)
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.files_dir = self.data_dir / "agent_files"
        self.project_dir = tmp / "project"
        self.outside_dir = tmp / "outside"
        for folder in (self.files_dir, self.project_dir, self.outside_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to 108 bytes: a short folder of its own (made by the
        # parent when this is a fresh app process, so it is removed even if this one is killed).
        given = os.environ.get(SHORT_DIR_VAR)
        self.own_short_dir = not given
        self.short_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="atk"))
        h = self.hex
        self.env_canaries = {
            "CANARY_SECRET": f"canary-env-{h}",
            "HF_TOKEN": f"hf_canary{h}",
            "OPENAI_API_KEY": f"sk-canary-openai-{h}",
        }
        self.langfuse_secret = f"sk-lf-canary-{h}"
        self.outside_secret = self.outside_dir / "secret.txt"
        self.outside_secret.write_text(f"canary-outside-file-{h}")
        self.project_env = self.project_dir / ".env"
        self.project_env.write_text(f"HF_TOKEN=hf_dotenv_canary{h}\nLANGFUSE_SECRET_KEY=sk-lf-dotenv-{h}\n")
        self.victim_secret = f"canary-victim-folder-{h}"
        # A secret held only in the app's memory, for /proc/<pid>/mem.
        self.mem_canary = f"canary-app-memory-{h}".encode()
        self.initial_canary = os.environ.get(INITIAL_CANARY_VAR, "")
        self.cross_marker = f"crossmark-{h}"
        self.seed = random.randrange(10**9, 10**10)
        self.markers = {
            "marker_outside": self.outside_dir / f"marker-{h}.txt",
            **_shared_markers(h),
            "marker_data": self.data_dir / f"attack-marker-{h}.txt",
        }
        self.listener = Listener(self.short_dir)
        # The app keeps this secret file open, so an inherited descriptor would show it.
        self.open_secret = open(self.outside_secret, "rb")  # noqa: SIM115 - closed in close()
        self.attacker_id = ""
        self.victim_id = ""
        self.app_cmdline = _read("/proc/self/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        pid1 = _read("/proc/1/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        self.pid1_cmdline = pid1 if pid1 != self.app_cmdline else ""

    @property
    def tokens(self) -> dict[str, str]:
        return {
            "app_pid": str(os.getpid()),
            "mem_addr": str(id(self.mem_canary) + 32),  # PyBytesObject data starts 32 bytes in
            "outside_secret": str(self.outside_secret),
            "outside_dir": str(self.outside_dir),
            "project_env": str(self.project_env),
            "db_path": str((self.data_dir / "feedback.sqlite3").resolve()),
            "files_dir": str(self.files_dir.resolve()),
            "victim_id": self.victim_id,
            "attacker_id": self.attacker_id,
            "tcp_port": str(self.listener.tcp.getsockname()[1]),
            "udp_port": str(self.listener.udp.getsockname()[1]),
            "unix_abstract": self.listener.abstract_name,
            "unix_path": self.listener.unix_path,
            "cross_marker": self.cross_marker,
            "seed": str(self.seed),
            **{name: str(path) for name, path in self.markers.items()},
        }

    def render(self, code: str) -> str:
        tokens = self.tokens
        return re.sub(r"<<(\w+)>>", lambda m: tokens[m.group(1)], code)

    def canaries(self) -> dict[str, str]:
        """Values that must never reach the chat or the traces, by where they were planted."""
        found = {
            **{f"{k} (app environment)": v for k, v in self.env_canaries.items()},
            "LANGFUSE_SECRET_KEY (settings)": self.langfuse_secret,
            ".env file in the project": f"dotenv_canary{self.hex}",
            "secret file outside the folder": f"canary-outside-file-{self.hex}",
            "another session's file": self.victim_secret,
            "the app's memory": self.mem_canary.decode(),
            "SQLite store header": "SQLite format 3",
            "`id` output (a shell ran)": "uid=",
        }
        if self.initial_canary:
            found["the app's initial environment (/proc)"] = self.initial_canary
        if len(self.app_cmdline) >= 12:
            found["the app's command line"] = self.app_cmdline
        if len(self.pid1_cmdline) >= 8:
            found["pid 1's command line"] = self.pid1_cmdline
        return found

    def changed_files(self) -> list[str]:
        out = [f"file created outside the folder: {p}" for p in self.markers.values() if p.exists()]
        if self.outside_secret.read_text() != f"canary-outside-file-{self.hex}":
            out.append(f"file outside the folder modified: {self.outside_secret}")
        for extra in (self.outside_dir / "marker.txt",):
            if extra.exists():
                out.append(f"file created outside the folder: {extra}")
        return out

    def close(self) -> None:
        self.listener.close()
        self.open_secret.close()
        for path in self.markers.values():
            try:
                path.unlink()
            except OSError:
                pass
        if self.own_short_dir:
            shutil.rmtree(self.short_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Shared state that in-process probes mutate (restored after every probe)
# --------------------------------------------------------------------------------------------


def _shared_objects() -> list[Any]:
    import collections
    import math

    from smolagents import local_python_executor

    return [collections.Counter, json.JSONEncoder, math, random, local_python_executor]


def _snapshot() -> Any:
    from smolagents import local_python_executor

    return (
        [(obj, dict(vars(obj))) for obj in _shared_objects()],
        dict(local_python_executor.BASE_PYTHON_TOOLS),
        random.getstate(),
    )


def _restore(snapshot: Any) -> None:
    from smolagents import local_python_executor

    objects, tools, state = snapshot
    for obj, saved in objects:
        current = vars(obj)
        for key in [k for k in current if k not in saved]:
            delattr(obj, key)
        for key, value in saved.items():
            if current.get(key) is not value:
                try:
                    setattr(obj, key, value)
                except (AttributeError, TypeError):
                    pass
    local_python_executor.BASE_PYTHON_TOOLS.clear()
    local_python_executor.BASE_PYTHON_TOOLS.update(tools)
    random.setstate(state)


# --------------------------------------------------------------------------------------------
# Running a probe through the real chat path
# --------------------------------------------------------------------------------------------


def _text(message: dict[str, Any]) -> str:
    from tests.helpers import text_of

    return text_of(message)


def _history_text(history: list[dict[str, Any]]) -> str:
    return "\n".join(_text(m) for m in history)


def _first_error(history: list[dict[str, Any]]) -> str:
    for message in history:
        title = str((message.get("metadata") or {}).get("title", ""))
        text = _text(message)
        if "error" in title or text.startswith("⚠️"):
            return " ".join(text.split())
    return ""


def _answer(history: list[dict[str, Any]]) -> str:
    return _text(history[-1]) if history else ""


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _App:
    """One app runtime with a scripted model whose action for each task is set by the runner."""

    def __init__(self, ctx: Context, settings_env: dict[str, str], probe: Probe) -> None:
        from app import ChatHandlers, create_runtime
        from config.settings import settings_from_env
        from tests.fakes import FakeLangfuse, ScriptedModel

        self.codes: dict[str, str] = {}
        self.fake = FakeLangfuse()
        # Polled every 50 ms rather than 0.5 s, so shutting it down after each probe is quick.
        self.fake.thread = threading.Thread(
            target=self.fake.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.fake.thread.start()
        env = {
            "DATA_DIR": str(ctx.data_dir),
            "AGENT_FILES_DIR": str(ctx.files_dir),
            "LANGFUSE_PUBLIC_KEY": f"pk-lf-probe-{ctx.hex}",
            "LANGFUSE_SECRET_KEY": ctx.langfuse_secret,
            "LANGFUSE_BASE_URL": self.fake.url,
            "HF_TOKEN": ctx.env_canaries["HF_TOKEN"],
            "OPENAI_API_KEY": ctx.env_canaries["OPENAI_API_KEY"],
            **BASE_SETTINGS,
            **probe.settings,
            **settings_env,
        }
        self.model = ScriptedModel(self._respond)
        try:
            self.runtime = create_runtime(settings_from_env(env), model=self.model)
        except BaseException:
            self.fake.refuse()
            raise
        self.handlers = ChatHandlers(self.runtime)
        self.sessions: list[Any] = []
        self.chat_text = ""  # every chat any session of this probe was shown
        self._lock = threading.Lock()

    def _respond(self, messages: list[Any]) -> str:
        from tests.fakes import all_text, code_reply, last_task

        if "got stuck and failed" in all_text(messages[:1]):
            return "The agent stopped without an answer."  # smolagents' call after the last step
        code = self.codes.get(last_task(messages))
        if code is None:
            return code_reply("final_answer('No script for this task.')")
        return code_reply(code, thought="Let me try.")

    def session(self) -> Any:
        _, session, _ = self.handlers.on_load(BROWSER_ID)
        self.sessions.append(session)
        return session

    def turn(self, session: Any, task: str, code: str) -> list[dict[str, Any]]:
        self.codes[task] = code
        outputs = list(self.handlers.respond(task, [], session, BROWSER_ID))
        history = outputs[-1][1]
        with self._lock:
            self.chat_text += _history_text(history) + "\n"
        return history

    def spans_text(self) -> str:
        parts: list[str] = []
        try:
            self.runtime.feedback.telemetry.flush()
            store = self.runtime.feedback.store
            for trace in store.list_traces(limit=1000):
                parts.append(str(trace))
                parts.extend(str(span) for span in store.spans_of(trace["id"]))
        except Exception as exc:  # a probe may have broken the app's own JSON: that is a finding too
            parts.append(f"(spans unreadable: {exc})")
        with self.fake.state.lock:
            parts.extend(str(span.attributes) for span in self.fake.state.spans)
        return "\n".join(parts)

    def close(self) -> None:
        for session in self.sessions:
            try:
                self.runtime.end_session(session)
            except Exception:
                pass
        closer = getattr(self.runtime, "close", None)
        try:
            if callable(closer):
                closer()
            else:
                self.runtime.feedback.close()
        finally:
            self.fake.refuse()


def _plant_victim(app: _App, ctx: Context) -> None:
    victim = app.session()
    ctx.victim_id = victim.session_id
    folder = ctx.files_dir / victim.session_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secret.txt").write_text(ctx.victim_secret)


def _leaks(ctx: Context, places: dict[str, str]) -> list[str]:
    """One finding naming every canary seen, and where (chat, traces)."""
    hits: dict[str, list[str]] = {}
    for place, text in places.items():
        for label, value in ctx.canaries().items():
            if value and value in text:
                hits.setdefault(label, []).append(place)
    if not hits:
        return []
    return ["leaked " + "; ".join(f"{label} [{', '.join(where)}]" for label, where in hits.items())]


def _random_draws(seed: int, count: int = 4000) -> set[str]:
    rng = random.Random(seed)
    return {repr(rng.random()) for _ in range(count)}


def _check_self(probe: Probe, ctx: Context, code: str) -> None:
    """A probe whose code contains what it is detected by would always look breached."""
    for needle in ctx.canaries().values():
        if needle in code or needle in (probe.observer or ""):
            raise ValueError(f"probe {probe.name}: its code contains a detection string {needle!r}")
    if probe.reveals and ctx.tokens[probe.reveals] in code:
        raise ValueError(f"probe {probe.name}: its code contains the {probe.reveals} it must not reveal")
    if probe.observer and ctx.cross_marker in ctx.render(probe.observer):
        raise ValueError(f"probe {probe.name}: the observer's code contains the marker it looks for")


def _run_here(probe: Probe, settings_env: dict[str, str], tmp_path: Path) -> ProbeResult:
    started = time.monotonic()
    ctx = Context(tmp_path)
    saved_env = {name: os.environ.get(name) for name in ctx.env_canaries}
    os.environ.update(ctx.env_canaries)
    snapshot = _snapshot()
    app: _App | None = None
    try:
        app = _App(ctx, settings_env, probe)
        _plant_victim(app, ctx)
        attacker = app.session()
        ctx.attacker_id = attacker.session_id
        if probe.setup is not None:
            probe.setup(ctx)
        code = ctx.render(probe.code)
        _check_self(probe, ctx, code)
        if probe.bomb:
            findings, note = _bomb(app, ctx, attacker, code)
        else:
            findings, note = _attack(app, ctx, probe, attacker, code)
        _restore(snapshot)
        if not probe.bomb:  # bombs check the same and another session themselves
            findings += _control(app, ctx)
        findings += _leaks(ctx, {"chat": app.chat_text, "traces": app.spans_text()})
        findings += ctx.changed_files()
        findings += [f"the {kind} listener got a connection" for kind in ctx.listener.contacts()]
    finally:
        _restore(snapshot)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if app is not None:
            app.close()
        ctx.close()
    seconds = time.monotonic() - started
    findings = list(dict.fromkeys(findings))
    if findings:
        return ProbeResult(probe.name, probe.category, False, _short("; ".join(findings), 400), seconds)
    return ProbeResult(probe.name, probe.category, True, _short(note), seconds)


def _folder_bytes(ctx: Context) -> int:
    """Bytes in the session folders, the victim's planted file aside."""
    victim = ctx.files_dir / ctx.victim_id
    return sum(
        f.stat().st_size
        for f in ctx.files_dir.rglob("*")
        if f.is_file() and not f.is_symlink() and victim not in f.parents
    )


def _ticks(ctx: Context) -> str:
    return "|".join(sorted(_read(str(f)).decode(errors="replace") for f in ctx.files_dir.rglob("tick.txt")))


def _attack(app: _App, ctx: Context, probe: Probe, attacker: Any, code: str) -> tuple[list[str], str]:
    history = app.turn(attacker, f"probe {probe.name}", code)
    findings: list[str] = []
    note = _first_error(history) or f"answer: {_answer(history)}"
    if probe.reveals and ctx.tokens[probe.reveals] in _history_text(history):
        findings.append(f"the chat shows {probe.reveals.replace('_', ' ')} {ctx.tokens[probe.reveals]}")
    if probe.lingers:
        time.sleep(0.3)
        first = _ticks(ctx)
        time.sleep(1.5)
        if _ticks(ctx) != first:
            findings.append("the code kept running after its step had ended")
            if app.runtime.settings.__dict__.get("code_executor") == "local-unsafe":
                # A thread in this very process: let it finish before its folder is removed.
                for _ in range(50):
                    before = _ticks(ctx)
                    time.sleep(0.2)
                    if _ticks(ctx) == before:
                        break
        limit_mb = int(getattr(app.runtime.settings, "code_max_folder_mb", 0))
        size = _folder_bytes(ctx)
        if limit_mb and size > limit_mb * 1024 * 1024:
            findings.append(f"the folder grew to {size / 1e6:.0f} MB, past its {limit_mb} MB limit")
    if probe.observer:
        other = app.session()
        seen = _history_text(app.turn(other, f"observe {probe.name}", ctx.render(probe.observer)))
        if probe.expect == "random_draws":
            draws = _random_draws(ctx.seed)
            hits = [d for d in re.findall(r"0\.\d+", seen) if d in draws]
            if hits:
                findings.append(f"another session drew {hits[0]}, a number of the attacker's seed")
        elif probe.expect and ctx.tokens[probe.expect] in seen:
            findings.append(f"another session saw the change ({ctx.tokens[probe.expect]})")
        note += f" | other session: {_short(_answer_of(seen), 60)}"
    return findings, note


def _control(app: _App, ctx: Context) -> list[str]:
    """A new session's ordinary turn must still work: a probe that 'is blocked' only because no
    code runs at all (a broken sandbox, a broken harness) would otherwise pass unnoticed."""
    history = app.turn(
        app.session(),
        "control turn",
        f"import math\nfinal_answer('control-{ctx.hex}-' + str(math.floor(2.5)))",
    )
    if _answer(history) == f"control-{ctx.hex}-2":
        return []
    return [
        f"an ordinary turn of a new session failed afterwards: {_short(_first_error(history) or _answer(history))}"
    ]


def _answer_of(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def _bomb(app: _App, ctx: Context, attacker: Any, code: str) -> tuple[list[str], str]:
    """The bomb runs in one session while another session's ordinary turn must stay quick."""
    findings: list[str] = []
    box: dict[str, Any] = {}

    def run_bomb() -> None:
        try:
            box["history"] = app.turn(attacker, "probe bomb", code)
        except BaseException as exc:
            box["error"] = exc

    bomb = threading.Thread(target=run_bomb, daemon=True)
    bomb.start()
    time.sleep(1.0)
    other = app.session()
    begin = time.monotonic()
    other_history = app.turn(other, "ordinary turn of another user", f"final_answer('other-ok-{ctx.hex}')")
    other_s = time.monotonic() - begin
    overlapped = bomb.is_alive()  # False: the bomb had already been stopped when that turn ended
    if _answer(other_history) != f"other-ok-{ctx.hex}":
        findings.append(
            "another session's turn failed during the bomb: "
            + _short(_first_error(other_history) or _answer(other_history))
        )
    elif other_s > OTHER_TURN_LIMIT_S:
        findings.append(f"another session's turn took {other_s:.1f} s during the bomb (app frozen)")
    bomb.join(45)
    if bomb.is_alive():
        return [*findings, "the bomb's turn did not end within 45 s"], ""
    if "error" in box:
        return [*findings, f"the bomb's turn raised {box['error']!r}"], ""
    history = box["history"]
    stop = next((" ".join(_text(m).split()) for m in history if STOPPED in _text(m)), "")
    if not stop:
        findings.append(
            f"no '{STOPPED}' message; the step ended with: {_short(_first_error(history) or _answer(history))}"
        )
    after = app.turn(attacker, "ordinary turn after the bomb", f"final_answer('after-ok-{ctx.hex}')")
    if _answer(after) != f"after-ok-{ctx.hex}":
        findings.append(
            "the same session could not run an ordinary turn afterwards: "
            + _short(_first_error(after) or _answer(after))
        )
    during = "during the bomb" if overlapped else "after the bomb had been stopped"
    return findings, f"{_short(stop, 100)} | other session's turn: {other_s:.1f} s, {during}"


def _run_in_app_process(probe: Probe, settings_env: dict[str, str], tmp_path: Path) -> ProbeResult:
    """Run the probe inside a fresh app process; a frozen or killed app is a breach."""
    started = time.monotonic()
    initial_canary = f"canary-initial-env-{secrets.token_hex(6)}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LANGFUSE_", "OPENAI_", "HF_TOKEN", "MODEL_", "OTEL_", "PYTEST_"))
    }
    env[INITIAL_CANARY_VAR] = initial_canary
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    env.setdefault("HF_HUB_OFFLINE", "1")
    command = [
        sys.executable,
        "-m",
        "tests.attacks",
        "--one",
        probe.name,
        "--settings",
        json.dumps(settings_env),
        "--tmp",
        str(tmp_path),
    ]

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (BOMB_APP_ADDRESS_SPACE, BOMB_APP_ADDRESS_SPACE))

    timeout = 90
    env[SHORT_DIR_VAR] = short_dir = tempfile.mkdtemp(prefix="atk")
    env[HEX_VAR] = hex_ = secrets.token_hex(6)
    try:
        done = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit if probe.bomb else None,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(
            probe.name,
            probe.category,
            False,
            f"the app process did not finish in {timeout} s (frozen)",
            timeout,
        )
    finally:  # what a killed app process could not clean up
        shutil.rmtree(short_dir, ignore_errors=True)
        for path in _shared_markers(hex_).values():
            path.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            data["seconds"] = seconds
            return ProbeResult(**data)
    tail = _short((done.stderr or done.stdout)[-600:], 300)
    return ProbeResult(
        probe.name, probe.category, False, f"the app process died (exit {done.returncode}): {tail}", seconds
    )


def run_probe(probe: Probe, settings_env: dict[str, str], tmp_path: Path) -> ProbeResult:
    """Run one probe through the real chat path; `blocked` is False when any side effect showed."""
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    if probe.isolated_app:
        return _run_in_app_process(probe, dict(settings_env), tmp_path)
    return _run_here(probe, dict(settings_env), tmp_path)


def run_suite(
    executor: str | None = None,
    *,
    names: list[str] | None = None,
    settings: dict[str, str] | None = None,
    report: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Every probe (only in-process-safe ones for local-unsafe), each in its own temp folder."""
    settings_env = {**(settings or {}), **({"CODE_EXECUTOR": executor} if executor else {})}
    chosen = [p for p in PROBES if names is None or p.name in names]
    if executor == "local-unsafe":
        chosen = [p for p in chosen if p.in_process_safe]
    results = []
    with tempfile.TemporaryDirectory(prefix="attacks-", ignore_cleanup_errors=True) as root:
        for i, probe in enumerate(chosen):
            # smolagents prints each failed step to stdout; only the results are wanted here.
            with contextlib.redirect_stdout(io.StringIO()):
                result = run_probe(probe, settings_env, Path(root) / f"{i:02d}-{probe.name}")
            results.append(result)
            if report is not None:
                report(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run attack probes through the real chat path.")
    parser.add_argument("--executor", default=None, help="CODE_EXECUTOR for the app (default: the app's)")
    parser.add_argument("--json", action="store_true", help="print one JSON result per line")
    parser.add_argument("--only", default="", help="comma-separated probe names")
    # Internal: run one probe in this (fresh) app process and print its result.
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Like tests/conftest.py: never expose a developer's real keys to the probes.
    for name in list(os.environ):
        if name.startswith(("LANGFUSE_", "OPENAI_", "HF_TOKEN", "MODEL_", "OTEL_")):
            os.environ.pop(name)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        result = _run_here(BY_NAME[args.one], json.loads(args.settings), Path(args.tmp))
        print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)
        # A bomb that got through may leave a thread running: exit anyway once cleanup had time.
        watchdog = threading.Timer(15, os._exit, (0,))
        watchdog.daemon = True
        watchdog.start()
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None

    def show(result: ProbeResult) -> None:
        print(json.dumps(asdict(result)) if args.json else result.line(), flush=True)

    results = run_suite(args.executor, names=names, report=show)
    breached = [r for r in results if not r.blocked]
    if not args.json:
        print(f"{len(results)} probes: {len(results) - len(breached)} blocked, {len(breached)} breached")
    return 1 if breached else 0
