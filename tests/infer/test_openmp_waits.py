"""The groundbreak command's OpenMP threads wait passively unless the user says otherwise.

Spinning waits made a 2048^2 prediction 3-4x slower when its prefetch thread or another job
shared the cores (bench/README.md, "OpenMP waits"). The policy is read once, when torch loads
libgomp, so it is checked in fresh interpreters.
"""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import os, sys; import groundbreak.infer; import torch; "
    "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
)


def probe(env_policy: str | None) -> str:
    """What a fresh interpreter that imports groundbreak.infer, then torch, sees."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_importing_the_package_before_torch_sets_passive_waits() -> None:
    assert probe(None) == "PASSIVE True"


def test_a_policy_the_user_set_is_kept() -> None:
    assert probe("ACTIVE") == "ACTIVE True"
