"""The model's code runs in a worker process per session: its lifecycle, limits and tools.

The attack suite (tests/sandbox/test_attacks.py) tries to get out; these tests check that ordinary
use still works and that every worker lives exactly as long as its session.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from smolagents import Tool

from app import ChatHandlers, isolation_line
from config.settings import SettingsError
from sandbox.executor import IsolatedExecutor, start_sandbox
from tests.fakes import ScriptedModel, code_reply, last_task
from tests.helpers import free_port, text_of, turn, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _coder(code_by_task: dict[str, str]) -> ScriptedModel:
    def respond(messages):
        task = last_task(messages)
        return code_reply(code_by_task.get(task, "final_answer('ok')"))

    return ScriptedModel(respond)


def _executor(session) -> IsolatedExecutor:
    executor = session.agent.python_executor
    assert isinstance(executor, IsolatedExecutor)
    return executor


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_code_runs_outside_the_app_process(make_settings, make_runtime):
    code = "import math\nsetattr(math, 'isolation_probe', 'changed')\nfinal_answer(math.isolation_probe)"
    runtime = make_runtime(make_settings(MAX_STEPS="1"), _coder({"touch math": code}))
    history, session, _ = turn(ChatHandlers(runtime), None, [], "touch math")
    assert text_of(history[-1]) == "changed"
    assert not hasattr(math, "isolation_probe"), "the code changed a module of the app's own process"
    assert _executor(session).worker.pid != os.getpid()


def test_worker_starts_on_first_code_step_and_keeps_variables(make_settings, make_runtime):
    code = {"first": "x = 41\nfinal_answer(x)", "second": "final_answer(x + 1)"}
    runtime = make_runtime(make_settings(MAX_STEPS="1"), _coder(code))
    handlers = ChatHandlers(runtime)
    _, session, _ = handlers.on_load("0b6c3b84-7f8c-4d35-8f4e-1f8f3c2e4a10")
    assert _executor(session).worker is None, "no process before the first code step"
    history, session, _ = turn(handlers, session, [], "first")
    pid = _executor(session).worker.pid
    history, session, _ = turn(handlers, session, history, "second")
    assert text_of(history[-1]) == "42"
    assert _executor(session).worker.pid == pid


@pytest.mark.parametrize("how", ["new chat", "expiry"])
def test_worker_is_killed_and_folder_removed_when_the_session_ends(how, make_settings, make_runtime):
    code = "with open('keep.txt', 'w') as f:\n    f.write('x')\nfinal_answer('saved')"
    runtime = make_runtime(make_settings(MAX_STEPS="1"), _coder({"save": code}))
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], "save")
    executor = _executor(session)
    pid, folder = executor.worker.pid, executor.work_dir
    assert _alive(pid) and (folder / "keep.txt").exists()
    if how == "new chat":
        _, fresh, _, _ = handlers.on_new_chat(session, "0b6c3b84-7f8c-4d35-8f4e-1f8f3c2e4a10")
        assert fresh is not session and _executor(fresh).work_dir != folder
    else:
        runtime.end_session(session)
    wait_for(lambda: not _alive(pid), timeout=5)
    assert not folder.exists()


def test_a_limit_stops_the_step_and_the_session_goes_on(make_settings, make_runtime):
    code = {"spin": "while True:\n    pass", "after": "final_answer('still here')"}
    runtime = make_runtime(make_settings(MAX_STEPS="1", CODE_TIMEOUT_S="2"), _coder(code))
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], "spin")
    first = _executor(session)
    shown = "\n".join(text_of(m) for m in history)
    assert "Your code ran for more than 2 s and was stopped." in shown
    assert first.worker is None
    history, session, _ = turn(handlers, session, history, "after")
    assert text_of(history[-1]) == "still here"
    runtime.feedback.telemetry.flush()
    traces = {t["input"]: t["id"] for t in runtime.feedback.store.list_traces()}
    spans = runtime.feedback.store.spans_of(traces["spin"])
    assert "was stopped" in " ".join(f"{s['status_message']} {s['attributes']}" for s in spans)


def test_another_session_is_not_slowed_by_a_busy_worker(make_settings, make_runtime):
    code = {"hog": "sum(range(10**11))", "quick": "final_answer('quick')"}
    runtime = make_runtime(make_settings(MAX_STEPS="1", CODE_TIMEOUT_S="4"), _coder(code))
    handlers = ChatHandlers(runtime)
    _, quick_session, _ = turn(handlers, None, [], "quick")  # its worker is warm
    hog = threading.Thread(target=turn, args=(handlers, None, [], "hog"))
    hog.start()
    time.sleep(0.5)
    started = time.monotonic()
    history, _, _ = turn(handlers, quick_session, [], "quick")
    took = time.monotonic() - started
    hog.join()
    assert text_of(history[-1]) == "quick"
    assert took < 1.0, f"a turn took {took:.2f} s while another session's code ran"


class Lookup(Tool):
    name = "lookup"
    description = "Looks a word up."
    inputs = {"word": {"type": "string", "description": "the word"}}
    output_type = "string"
    calls: list[int] = []

    def forward(self, word: str) -> str:
        Lookup.calls.append(os.getpid())
        return f"definition of {word}"


def test_tools_run_in_the_app_and_return_values_to_the_code(make_settings, make_runtime):
    code = "d = lookup('sandbox')\nfinal_answer(d.upper())"
    Lookup.calls.clear()
    runtime = make_runtime(make_settings(MAX_STEPS="1"), _coder({"define": code}), [Lookup()])
    history, _, _ = turn(ChatHandlers(runtime), None, [], "define")
    assert text_of(history[-1]) == "DEFINITION OF SANDBOX"
    assert Lookup.calls == [os.getpid()]


def test_isolation_level_is_measured_and_can_be_narrowed(make_settings, make_runtime):
    full = make_runtime(make_settings())
    line = isolation_line(full)
    assert line.startswith("code isolation: process")
    bare = make_runtime(make_settings(CODE_SANDBOX_LAYERS="none"))
    assert isolation_line(bare).startswith("code isolation: process (namespaces, landlock, seccomp not")
    unsafe = make_runtime(make_settings(CODE_EXECUTOR="local-unsafe"))
    assert "NONE" in isolation_line(unsafe)


def test_remote_executor_without_its_package_is_a_clear_error(make_settings):
    with pytest.raises(SettingsError, match="CODE_EXECUTOR=e2b needs .*E2B_API_KEY"):
        start_sandbox(make_settings(CODE_EXECUTOR="e2b"))
    with pytest.raises(SettingsError, match="CODE_EXECUTOR must be one of"):
        make_settings(CODE_EXECUTOR="vm")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().split(") ", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def test_workers_die_with_the_app(tmp_path):
    """SIGKILL of the app leaves no zygote or worker behind."""
    from tests.fakes import FakeOpenAI
    from tests.gradio_queue import QueueClient

    port = free_port()
    with FakeOpenAI() as llm:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DATA_DIR": str(tmp_path / "data"),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "MODEL_PROVIDER": "openai",
            "OPENAI_BASE_URL": llm.url,
            "GRADIO_SERVER_PORT": str(port),
        }
        log = open(tmp_path / "app.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            import urllib.request

            wait_for(
                lambda: _try(urllib.request.urlopen, f"http://127.0.0.1:{port}/"), timeout=90, interval=0.3
            )
            assert QueueClient(f"http://127.0.0.1:{port}/").chat("run some code").success
            zygotes = _children(proc.pid)
            workers = [w for z in zygotes for w in _children(z)]
            assert zygotes and workers, "a code step should have started a worker"
        finally:
            proc.kill()
            proc.wait(timeout=30)
    for pid in zygotes + workers:
        wait_for(lambda pid=pid: not _alive(pid), timeout=5)
    assert "code isolation: process" in (tmp_path / "app.log").read_text()


def _try(fn, *args):
    try:
        return fn(*args, timeout=2) or True
    except OSError:
        return False


def test_sessions_never_share_a_worker_or_a_folder(make_settings, make_runtime):
    handlers = ChatHandlers(make_runtime(make_settings(MAX_STEPS="1"), _coder({"a": "final_answer(1)"})))
    _, one, _ = turn(handlers, None, [], "a")
    _, two, _ = turn(handlers, None, [], "a")
    assert _executor(one).worker.pid != _executor(two).worker.pid
    assert _executor(one).work_dir != _executor(two).work_dir


def test_a_reply_split_across_the_poll_interval_is_read_whole(make_settings, tmp_path):
    """A reply whose header and body arrive a poll interval apart is one message (bench found this)."""
    import json
    import socket
    import struct

    from sandbox.executor import CodeSandbox, Worker

    executor = IsolatedExecutor(CodeSandbox(make_settings()), tmp_path / "w")
    ours, theirs = socket.socketpair()
    stand_in = subprocess.Popen(["sleep", "60"])  # the pidfd Worker.kill would signal
    worker = Worker(stand_in.pid, os.pidfd_open(stand_in.pid), ours)
    executor.worker = worker
    body = json.dumps({"output": "whole", "logs": "", "final": True}).encode()

    def slow_worker() -> None:
        theirs.sendall(struct.pack("!I", len(body)))
        time.sleep(1.3)
        theirs.sendall(body)

    threading.Thread(target=slow_worker).start()
    try:
        assert executor._wait(worker)["output"] == "whole"
    finally:
        worker.kill()
        stand_in.wait(timeout=5)


def test_tool_calls_per_step_are_capped(make_settings, make_runtime):
    code = "n = 0\nfor i in range(100):\n    try:\n        lookup('x')\n        n += 1\n    except Exception:\n        break\nfinal_answer(n)"
    Lookup.calls.clear()
    runtime = make_runtime(make_settings(MAX_STEPS="1"), _coder({"flood": code}), [Lookup()])
    history, _, _ = turn(ChatHandlers(runtime), None, [], "flood")
    assert text_of(history[-1]) == "20" and len(Lookup.calls) == 20


NOBODY = 65534
# _AS_NOBODY's exit status (with "NOT STARTED: why" on stderr) when the script could not be started.
_NOT_STARTED = 97
# Run as root: show uid NOBODY the interpreter, then become NOBODY and exec the script. An
# interpreter behind a folder NOBODY cannot enter (pyenv's under /root, mode 700 on a fresh
# machine) is shown in a private mount namespace: a tmpfs of mode 755 covers that folder and the
# interpreter's own folders are bind-mounted back at their same paths (so its RUNPATH, sys.prefix,
# a venv's pyvenv.cfg and .pth files all hold). The namespace ends with the process: nothing to undo.
_AS_NOBODY = r"""
import ctypes, json, os, sys
plan = json.loads(sys.argv[1])
try:
    if plan["covers"]:
        libc = ctypes.CDLL(None, use_errno=True)

        def check(result, what):
            if result != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"{what}: {os.strerror(err)}")

        def mount(source, target, fstype, flags, data=None):
            args = [s.encode() if s else None for s in (source, target, fstype)]
            check(libc.mount(*args, ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")

        MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
        check(libc.unshare(0x20000), "unshare(CLONE_NEWNS)")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        held = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in plan["show"]]  # before the covers
        os.umask(0o022)
        for cover in plan["covers"]:
            mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        for path, fd in held:
            os.makedirs(path, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
    os.chdir(plan["cwd"])
    os.setgroups([])
    os.setgid(plan["id"])
    os.setuid(plan["id"])
    os.execve(plan["argv"][0], plan["argv"], plan["env"])
except OSError as exc:
    print(f"NOT STARTED: {exc}", file=sys.stderr)
    sys.exit(97)  # _NOT_STARTED
"""


def _closed_to(path: Path, uid: int) -> bool:
    """Whether a user with only `uid` (as its user and group id) cannot enter the folder `path`."""
    import stat

    st = path.stat()
    bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == uid else stat.S_IXOTH
    return not st.st_mode & bit


def _showing_plan(folders: set[Path], uid: int) -> tuple[list[str], list[str]]:
    """Folders to cover with an open tmpfs (the outermost closed ancestors) and folders to show back."""
    covers: set[Path] = set()
    for folder in folders:
        if _closed_to(folder, uid):
            pytest.skip(f"uid {uid} cannot run this Python here: {folder} itself is closed to it")
        closed = [a for a in reversed(folder.parents) if _closed_to(a, uid)]
        if closed:
            if closed[0] == Path("/"):
                pytest.skip(f"uid {uid} cannot run this Python here: / is closed to it")
            covers.add(closed[0])
    covers = {c for c in covers if not any(o in c.parents for o in covers)}
    show = sorted(f for f in folders if any(c in f.parents for c in covers))
    show = [f for f in show if not any(o in f.parents for o in show)]  # outermost only
    return sorted(map(str, covers)), list(map(str, show))


def _interpreter_folders() -> set[Path]:
    """The folders this Python runs from: its executable, prefixes and site-packages (resolved)."""
    import site

    paths = {Path(sys.executable).resolve().parent}
    paths |= {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    paths |= {Path(p) for p in site.getsitepackages()}
    return {p.resolve() for p in paths if p.is_dir()}


def _readable_project_copy(into: Path, uid: int) -> Path:
    """The project's packages and top-level modules, owned by `uid` (the clone may be closed to it)."""
    import shutil

    copy = into / "project"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.is_dir() and entry.name != "tests" and (entry / "__init__.py").is_file():
            shutil.copytree(entry, copy / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        elif entry.is_file() and entry.suffix == ".py":
            shutil.copy2(entry, copy / entry.name)
    for folder, dirs, files in os.walk(copy):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, uid, uid)
    return copy


def test_an_unprivileged_app_gets_the_same_layers(tmp_path):
    """Spaces run the app as an ordinary user: the user namespace path must work there too."""
    if os.getuid() != 0:
        pytest.skip("needs root to start the app as another user")
    import json
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="unprivileged-app-"))  # pytest's own tmp root is root-only
    try:
        os.chown(home, NOBODY, NOBODY)
        project = _readable_project_copy(home, NOBODY)
        covers, show = _showing_plan({*_interpreter_folders(), home}, NOBODY)
        script = (
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "from config.settings import settings_from_env\n"
            "from sandbox.executor import CodeSandbox, IsolatedExecutor\n"
            "s = settings_from_env({'DATA_DIR': sys.argv[2]})\n"
            "sb = CodeSandbox(s)\n"
            "print(sb.describe())\n"
            "ex = IsolatedExecutor(sb, s.agent_files_dir.resolve() / 'x'); ex.send_tools({})\n"
            "print(ex('import statistics\\nstatistics.mean([2, 4])').output)\n"
            "ex.cleanup()\n"
        )
        plan = {
            "covers": covers,
            "show": show,
            "id": NOBODY,
            "cwd": str(home),
            "argv": [sys.executable, "-c", script, str(project), str(home / "data")],
            "env": {"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
        }
        done = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, json.dumps(plan)], capture_output=True, text=True, timeout=120
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if done.returncode == _NOT_STARTED and done.stderr.startswith("NOT STARTED: "):
        behind = f" (it is behind {', '.join(covers)}, closed to that user)" if covers else ""
        pytest.skip(f"uid {NOBODY} cannot run this Python here{behind}: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-2000:]
    as_root = isolation_line_of_root(tmp_path)
    assert done.stdout.splitlines()[0] == as_root
    assert done.stdout.splitlines()[1] == "3"


def isolation_line_of_root(tmp_path: Path) -> str:
    from config.settings import settings_from_env
    from sandbox.executor import CodeSandbox

    return CodeSandbox(settings_from_env({"DATA_DIR": str(tmp_path / "root-data")})).describe()


def test_a_worker_killed_from_outside_mid_step_is_reported_without_blame(make_settings, make_runtime):
    import signal

    code = {"warm": "final_answer('up')", "slow": "import time\ntime.sleep(5)\nfinal_answer('late')"}
    runtime = make_runtime(make_settings(MAX_STEPS="1", CODE_TIMEOUT_S="20"), _coder(code))
    handlers = ChatHandlers(runtime)
    history, session, _ = turn(handlers, None, [], "warm")
    pid = _executor(session).worker.pid
    threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
    history, session, _ = turn(handlers, session, history, "slow")
    shown = " ".join(text_of(m) for m in history)
    assert "ended unexpectedly (a crash, or stopped from outside)" in shown
    assert "Your code stopped" not in shown
    # The session goes on with a fresh worker.
    history, session, _ = turn(handlers, session, history, "warm")
    assert text_of(history[-1]) == "up" and _executor(session).worker.pid != pid
