"""Attack probes against the model's code, each driven through the real chat path.

The app is a public Space: anyone can ask a capable model to write any code, so the model's code
is assumed hostile. Every probe here is one piece of model code that a scripted model sends as
its action; the turn goes through `ChatHandlers.respond` exactly as a Gradio click would. A probe
is BREACHED only when an objective side effect shows it:

- a canary secret (planted in the app's environment, its settings, a `.env` file, a file outside
  the agent's folder, another session's folder, the app's memory, the app's initial environment)
  appears in the chat, the final answer or the stored trace spans;
- a marker file appears outside the agent's folder (/tmp, the project folder, DATA_DIR, ...);
- a shell command's output (`id`) appears, or a file it was told to write exists;
- a listener the runner started (TCP, UDP, unix path and abstract sockets) sees a connection;
- another session observes a change made by the attacking session, or the attacker's chat shows
  another session's id;
- code keeps running (writing in its folder) after its step has ended;
- an ordinary turn of a new session fails afterwards (run after every probe: it also proves the
  code really runs, so a broken sandbox cannot make every probe look blocked);
- for resource bombs: the step does NOT end with a limit message ("... and was stopped."), or the
  same session cannot run an ordinary turn afterwards, or another session's ordinary turn started
  while the bomb runs takes more than a few seconds (the app was frozen).

An error in the chat is the normal way a probe is blocked. The probes live in one module per
group (leaks, escapes, files, processes, network, sessions, lingering, bombs); the runner in
runner.py. `run_probe` is shared by
tests/sandbox/test_attacks.py and `python -m bench.sandbox`; `python -m tests.attacks` runs a whole suite
(see `main`). Probes marked `isolated_app` (and every bomb) run inside a fresh app process, so a
bomb that gets through cannot freeze or exhaust the process that runs the tests, and /proc probes
have a canary in that app's *initial* environment (what /proc/<pid>/environ shows).
"""

from tests.attacks.probe import PROJECT_ROOT, Probe, ProbeResult
from tests.attacks.runner import BY_NAME, PROBES, run_probe, run_suite

__all__ = ["BY_NAME", "PROBES", "PROJECT_ROOT", "Probe", "ProbeResult", "run_probe", "run_suite"]
