"""The attack suite again, as an unprivileged container that refuses namespaces would run it.

A Space typically cannot create user namespaces; the app then keeps Landlock and seccomp. Every
probe must still be blocked with those two layers alone.
"""

from __future__ import annotations

import pytest

from tests.attacks import PROBES, run_probe

FALLBACK = {"CODE_SANDBOX_LAYERS": "landlock,seccomp"}


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_attack_is_blocked_without_namespaces(probe, tmp_path):
    result = run_probe(probe, FALLBACK, tmp_path)
    assert result.blocked, f"{probe.category} / {probe.name} ({probe.why}) got through: {result.detail}"
