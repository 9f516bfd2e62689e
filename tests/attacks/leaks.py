"""Attack probes: secrets: environment, settings, .env, store, /proc, other sessions."""

from __future__ import annotations

from tests.attacks.probe import (
    Probe,
    _escape_then,
    _format_env,
)


def probes() -> list[Probe]:
    p: list[Probe] = []
    add = p.append

    formats = {
        "random": ("import random", "'{0._os.environ}'.format(random)"),
        "json": ("import json", "'{0.codecs.sys.modules[os].environ}'.format(json)"),
        "re": ("import re", "'{0.compile.__globals__[enum].sys.modules[os].environ}'.format(re)"),
        "collections": ("import collections", "'{0._sys.modules[os].environ}'.format(collections)"),
        "math": (
            "import math",
            "'{0.__loader__.create_module.__func__.__globals__[sys].modules[os].environ}'.format(math)",
        ),
        "datetime": (
            "import datetime",
            "'{0.__loader__.get_data.__globals__[sys].modules[os].environ}'.format(datetime)",
        ),
        "final_answer": ("", "'{0.__globals__[inspect].os.environ}'.format(final_answer)"),
        "open": (
            "",
            "'{0.__globals__[__builtins__][__loader__].create_module.__globals__[sys]"
            ".modules[os].environ}'.format(open)",
        ),
    }
    for source, (setup_line, expression) in formats.items():
        add(
            Probe(
                f"env-format-{source.replace('_', '-')}",
                "secrets",
                _format_env(expression, setup_line),
                f"os.environ through str.format attribute fields starting from `{source}`",
            )
        )
    add(
        Probe(
            "env-format-map",
            "secrets",
            "import random\nfinal_answer('{r._os.environ}'.format_map({'r': random}))",
            "os.environ through str.format_map",
        )
    )
    add(
        Probe(
            "env-format-traceback",
            "secrets",
            "try:\n    1 / 0\nexcept Exception as e:\n"
            "    final_answer('{0.__traceback__.tb_frame.f_globals[inspect].os.environ}'.format(e))",
            "os.environ through an exception's traceback frame, in a format field",
        )
    )
    add(
        Probe(
            "settings-object",
            "secrets",
            _escape_then(
                """
import gc
import sys
import config.settings as app_settings
found = []
for o in gc.get_referrers(app_settings.Settings):
    if hasattr(o, 'hf_token'):
        found.append([o.hf_token, o.openai_api_key, o.langfuse_secret_key])
for frame in sys._current_frames().values():
    while frame is not None:
        for value in list(frame.f_locals.values()):
            try:
                settings = getattr(getattr(value, 'rt', None), 'settings', None)
                if settings is not None:
                    found.append([settings.hf_token, settings.langfuse_secret_key])
            except Exception as exc:
                pass
        frame = frame.f_back
final_answer(str(found))
"""
            ),
            "the app's Settings object (secret keys) through gc and other threads' frames",
        )
    )
    add(
        Probe(
            "proc-self-environ",
            "secrets",
            _escape_then("import io\nfinal_answer(str(io.open('/proc/self/environ', 'rb').read()))\n"),
            "/proc/self/environ: the process's initial environment (a fork of the app keeps it)",
            isolated_app=True,
        )
    )
    add(
        Probe(
            "proc-parent-environ",
            "secrets",
            _escape_then(
                """
import io
out = []
for pid in [os.getppid(), <<app_pid>>]:
    for part in ['environ', 'cmdline']:
        try:
            out.append(io.open('/proc/' + str(pid) + '/' + part, 'rb').read().replace(b'\\0', b' ').decode())
        except Exception as exc:
            out.append(str(exc))
final_answer(chr(10).join(out))
"""
            ),
            "/proc/<parent pid>/environ and /proc/<app pid>/environ and cmdline",
            isolated_app=True,
        )
    )
    add(
        Probe(
            "proc-1-environ",
            "secrets",
            _escape_then(
                """
import io
out = []
for part in ['environ', 'cmdline']:
    try:
        out.append(io.open('/proc/1/' + part, 'rb').read().replace(b'\\0', b' ').decode())
    except Exception as exc:
        out.append(str(exc))
final_answer(chr(10).join(out))
"""
            ),
            "/proc/1/environ and cmdline (detected when the test itself can read pid 1)",
            breaks_in_process=False,
        )
    )
    add(
        Probe(
            "proc-app-cmdline",
            "secrets",
            _escape_then(
                "import io\n"
                "final_answer(io.open('/proc/<<app_pid>>/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
            ),
            "/proc/<app pid>/cmdline",
        )
    )
    add(
        Probe(
            "proc-app-mem",
            "secrets",
            _escape_then(
                """
import io
f = io.open('/proc/<<app_pid>>/mem', 'rb')
f.seek(<<mem_addr>>)
final_answer(str(f.read(64)))
"""
            ),
            "/proc/<app pid>/mem at the address of a canary held by the app",
        )
    )
    add(
        Probe(
            "dotenv-file",
            "secrets",
            _escape_then("import io\nfinal_answer(io.open('<<project_env>>').read())\n"),
            "the project's .env file (keys for HF, OpenAI, Langfuse)",
        )
    )
    add(
        Probe(
            "sqlite-store",
            "secrets",
            _escape_then("import io\nfinal_answer(str(io.open('<<db_path>>', 'rb').read(200)))\n"),
            "the SQLite store DATA_DIR/feedback.sqlite3 (every user's questions and answers)",
        )
    )
    add(
        Probe(
            "other-session-folder",
            "secrets",
            """
out = []
for name in ['../<<victim_id>>/secret.txt', '<<victim_id>>/secret.txt']:
    try:
        out.append(open(name).read())
    except Exception as exc:
        out.append(str(exc))
final_answer(str(out))
""",
            "another session's folder with the sandboxed open (relative paths only)",
        )
    )
    return p
