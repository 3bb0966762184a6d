"""``python -m arca`` with a toy reward, for training tests that run in a subprocess.

A tiny base model pretrained for seconds never solves a problem, so every reward would be 0, every
advantage 0 and the adapter would never move: resume and determinism tests would then compare
untouched adapters and could not fail. This wrapper trains on a deterministic
function of the completion text instead of the paper grader (reward 1 when it holds an even number of digits), so groups
disagree and training really updates the adapter. ``ARCA_TEST_STEP_SLEEP`` (seconds) slows each
step down so a test can kill the process between checkpoints.
"""

from __future__ import annotations

import os
import sys
import time


def toy_reward(completion: str, gold: str) -> bool:
    return sum(ch.isdigit() for ch in completion) % 2 == 0


def install() -> None:
    import functools

    import arca.train

    arca.train.train_run = functools.partial(arca.train.train_run, reward=toy_reward)
    delay = float(os.environ.get("ARCA_TEST_STEP_SLEEP", "0"))
    if delay:
        real = arca.train.train_step

        def slow_step(*args, **kwargs):
            out = real(*args, **kwargs)
            time.sleep(delay)
            return out

        arca.train.train_step = slow_step


if __name__ == "__main__":
    install()
    from arca.cli import main

    sys.exit(main(sys.argv[1:]))
