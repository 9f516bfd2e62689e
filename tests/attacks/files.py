"""Attack probes: files outside the folder."""

from __future__ import annotations

from tests.attacks.probe import (
    Probe,
    _escape_then,
    _symlinks,
)


def probes() -> list[Probe]:
    p: list[Probe] = []
    add = p.append

    add(
        Probe(
            "absolute-path",
            "files",
            """
out = []
for name in ['<<outside_secret>>', '/etc/passwd']:
    try:
        out.append(open(name).read())
    except Exception as exc:
        out.append(str(exc))
try:
    open('<<marker_outside>>', 'w').write('x')
except Exception as exc:
    out.append(str(exc))
final_answer(str(out))
""",
            "the sandboxed open with absolute paths (read and write)",
            breaks_in_process=False,
        )
    )
    add(
        Probe(
            "dotdot-path",
            "files",
            """
out = []
for depth in range(1, 8):
    try:
        out.append(open('../' * depth + 'outside/secret.txt').read())
    except Exception as exc:
        out.append(str(exc))
for depth in [2, 3]:
    try:
        open('../' * depth + 'outside/marker.txt', 'w').write('x')
    except Exception as exc:
        out.append(str(exc))
final_answer(str(out))
""",
            "the sandboxed open with ../ paths",
            breaks_in_process=False,
        )
    )
    add(
        Probe(
            "symlink-in-folder",
            "files",
            """
out = []
for name in ['link.txt', 'outside_dir/secret.txt', '<<attacker_id>>/link.txt',
             '<<attacker_id>>/outside_dir/secret.txt']:
    try:
        out.append(open(name).read())
    except Exception as exc:
        out.append(str(exc))
for name in ['outside_dir/marker.txt', '<<attacker_id>>/outside_dir/marker.txt']:
    try:
        open(name, 'w').write('x')
    except Exception as exc:
        out.append(str(exc))
final_answer(str(out))
""",
            "symlinks inside the session folder pointing at a file and a folder outside",
            setup=_symlinks,
            breaks_in_process=False,
        )
    )
    add(
        Probe(
            "fd-numbers-open",
            "files",
            """
out = []
for fd in range(0, 51):
    for name in [fd, '/proc/self/fd/' + str(fd), '/dev/fd/' + str(fd)]:
        try:
            out.append(open(name).read(200))
        except Exception as exc:
            pass
final_answer(str(out))
""",
            "open(3), open('/proc/self/fd/3'), /dev/fd/N for N in 0..50 with the sandboxed open",
            breaks_in_process=False,
        )
    )
    add(
        Probe(
            "fd-numbers-escape",
            "files",
            _escape_then(
                """
out = []
for fd in range(0, 64):
    try:
        out.append(str(os.pread(fd, 200, 0)))
    except Exception as exc:
        pass
    try:
        out.append(os.readlink('/proc/self/fd/' + str(fd)))
    except Exception as exc:
        pass
final_answer(str(out))
"""
            ),
            "inherited file descriptors 0..63 (the app holds a secret file open)",
        )
    )
    add(
        Probe(
            "write-outside",
            "files",
            _escape_then(
                """
out = []
for path in ['<<marker_tmp>>', '<<marker_project>>', '<<marker_data>>', '<<marker_outside>>']:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 420)
        os.write(fd, b'written by the model')
        os.close(fd)
        out.append('wrote ' + path)
    except Exception as exc:
        out.append(str(exc))
final_answer(str(out))
"""
            ),
            "create files in /tmp, the project folder, DATA_DIR and next to the data",
        )
    )
    add(
        Probe(
            "other-session-walk",
            "files",
            _escape_then(
                """
import io
out = []
for top in ['<<files_dir>>']:
    try:
        for root, dirs, files in os.walk(top):
            for name in files:
                try:
                    out.append(io.open(os.path.join(root, name), errors='replace').read(200))
                except Exception as exc:
                    pass
    except Exception as exc:
        out.append(str(exc))
final_answer(str(out))
"""
            ),
            "walk AGENT_FILES_DIR and read other sessions' files",
        )
    )

    add(
        Probe(
            "list-other-sessions",
            "files",
            _escape_then(
                """
out = []
for path in ['<<files_dir>>', '..', os.path.dirname(os.getcwd())]:
    try:
        out.append(path + ': ' + str(os.listdir(path)))
    except Exception as exc:
        out.append(str(exc))
final_answer(chr(10).join(out))
"""
            ),
            "list AGENT_FILES_DIR: other sessions' ids (their folder names)",
            reveals="victim_id",
        )
    )
    return p
