"""Attack probes: changes another session can see."""

from __future__ import annotations

from tests.attacks.probe import (
    Probe,
    _escape_then,
)


def probes() -> list[Probe]:
    p: list[Probe] = []
    add = p.append

    observe_attr = "import {m}\nfinal_answer(str(getattr({m}.{o}, 'attack_marker', 'absent')))"
    add(
        Probe(
            "setattr-shared-class",
            "cross-session",
            "import collections\nsetattr(collections.Counter, 'attack_marker', '<<cross_marker>>')\n"
            "final_answer('set')",
            "setattr on collections.Counter, seen by another session",
            observer=observe_attr.format(m="collections", o="Counter"),
            expect="cross_marker",
        )
    )
    add(
        Probe(
            "setattr-json-encoder",
            "cross-session",
            "import json\nsetattr(json.JSONEncoder, 'item_separator', '<<cross_marker>>')\nfinal_answer('set')",
            "json.JSONEncoder.item_separator changed: every json.dumps of the app and other users",
            observer="import json\nfinal_answer(json.dumps([1, 2]))",
            expect="cross_marker",
        )
    )
    add(
        Probe(
            "setattr-math-module",
            "cross-session",
            "import math\nsetattr(math, 'attack_marker', '<<cross_marker>>')\nsetattr(math, 'pi', 3)\n"
            "final_answer('set')",
            "setattr on the math module (smolagents hands each import a copy: routine)",
            observer="import math\nfinal_answer(str(getattr(math, 'attack_marker', 'absent')) + ' ' + str(math.pi))",
            expect="cross_marker",
            breaks_in_process=False,
        )
    )
    add(
        Probe(
            "random-seed-state",
            "cross-session",
            "import random\nrandom.seed(<<seed>>)\nfinal_answer('seeded')",
            "random.seed() in one session fixes the numbers another session draws",
            observer="import random\nfinal_answer(str(random.random()))",
            expect="random_draws",
        )
    )
    add(
        Probe(
            "sys-modules-setattr",
            "cross-session",
            _escape_then(
                "import sys\nsetattr(sys.modules['math'], 'attack_marker', '<<cross_marker>>')\n"
                "final_answer('set')\n"
            ),
            "an escape sets an attribute on the real math module in sys.modules",
            observer="import math\nfinal_answer(str(getattr(math, 'attack_marker', 'absent')))",
            expect="cross_marker",
        )
    )
    add(
        Probe(
            "executor-globals",
            "cross-session",
            _escape_then(
                "gen = (x for x in [0])\n"
                "gen.gi_frame.f_globals['BASE_PYTHON_TOOLS']['sorted'] = lambda x: '<<cross_marker>>'\n"
                "final_answer('set')\n"
            ),
            "the executor's module globals through a frame: replace `sorted` for every new session",
            observer="final_answer(str(sorted([3, 1, 2])))",
            expect="cross_marker",
        )
    )
    return p
