"""Attack probes: processes."""

from __future__ import annotations

from tests.attacks.probe import (
    Probe,
    _escape_then,
)


def probes() -> list[Probe]:
    p: list[Probe] = []
    add = p.append

    add(
        Probe(
            "subprocess-sh",
            "process",
            _escape_then(
                """
import subprocess
r = subprocess.run(['sh', '-c', 'id; echo ran > <<marker_outside>>'], capture_output=True, text=True)
final_answer(r.stdout + r.stderr)
"""
            ),
            "subprocess.run(['sh', ...]) after an escape",
        )
    )
    add(
        Probe(
            "os-fork",
            "process",
            _escape_then(
                """
pid = os.fork()
if pid == 0:
    fd = os.open('<<marker_outside>>', os.O_WRONLY | os.O_CREAT, 420)
    os.write(fd, b'child')
    os._exit(0)
os.waitpid(pid, 0)
final_answer('forked ' + str(pid))
"""
            ),
            "os.fork() after an escape",
        )
    )
    add(
        Probe(
            "posix-spawn-sh",
            "process",
            _escape_then(
                """
pid = os.posix_spawn('/bin/sh', ['sh', '-c', 'id > <<marker_outside>>'], {})
os.waitpid(pid, 0)
final_answer('spawned ' + str(pid))
"""
            ),
            "os.posix_spawn('/bin/sh') after an escape",
        )
    )
    add(
        Probe(
            "import-subprocess",
            "process",
            "import subprocess\nr = subprocess.run(['id'], capture_output=True, text=True)\nfinal_answer(r.stdout)",
            "plain `import subprocess` (routine: refused by the import list)",
            breaks_in_process=False,
        )
    )
    return p
