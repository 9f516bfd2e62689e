"""Attack probes: resource bombs (never in-process)."""

from __future__ import annotations

from tests.attacks.probe import (
    ESCAPE,
    Probe,
)


def probes() -> list[Probe]:
    p: list[Probe] = []
    add = p.append

    bombs = {  # name: (code, what it does, extra settings)
        "cpu-sum-range": ("final_answer(sum(range(10**11)))", "one C call that holds the GIL", {}),
        "cpu-busy-loop": ("n = 0\nwhile True:\n    n = n + sum(range(1000))", "an endless busy loop", {}),
        "cpu-bigint-pow": ("x = 10**10**8\nfinal_answer('done')", "a huge integer power (C, GIL held)", {}),
        "cpu-regex-backtrack": (
            "import re\nfinal_answer(str(re.match('(a+)+$', 'a' * 40 + 'b')))",
            "catastrophic regex backtracking (C, GIL held)",
            {},
        ),
        "mem-str-mult": ("s = 'x' * 10**10\nfinal_answer(len(s))", "a 10 GB string", {}),
        "mem-list-mult": ("x = [0] * 10**9\nfinal_answer(len(x))", "an 8 GB list", {}),
        "mem-bytes-zeroed": ("b = type(b'')(10**10)\nfinal_answer(len(b))", "10 GB of zero bytes", {}),
        "mem-bytearray": (
            ESCAPE + "import builtins\nb = builtins.bytearray(10**10)\nfinal_answer(len(b))",
            "bytearray(10**10) (not a tool: reached through an escape)",
            {},
        ),
        "output-print-100mb": (
            "chunk = 'x' * 10**6\nfor i in range(100):\n    print(chunk)",
            "100 MB of printed output",
            {},
        ),
        "output-answer-100mb": ("final_answer('y' * 10**8)", "a 100 MB final answer", {}),
        "folder-many-files": (
            "for i in range(2000):\n    f = open('f' + str(i) + '.txt', 'w')\n    f.write('x')\n    f.close()",
            "2000 files in the folder (limit 100)",
            {"CODE_MAX_FILES": "100"},
        ),
        "folder-huge-file": (
            "f = open('big.bin', 'w')\nchunk = 'z' * 10**6\nfor i in range(60):\n    f.write(chunk)\nf.close()",
            "a 60 MB file in the folder (limit 5 MB)",
            {"CODE_MAX_FOLDER_MB": "5"},
        ),
    }
    for name, (code, what, extra) in bombs.items():
        add(
            Probe(
                name,
                "resources",
                code,
                f"{what}: stopped with a limit message, the session goes on, the app is not frozen",
                settings=extra,
                in_process_safe=False,
                isolated_app=True,
                breaks_in_process=False,
                bomb=True,
            )
        )
    return p
