"""Fail points for crash tests: `CLM_FAILPOINT=<point>` makes the process SIGKILL itself there.

Points: `before_commit:<table>` (its data files are written and moved, the commit is not made),
`after_commit:<table>` (committed, nothing after it done) and `before_run_record`. Unset in normal
runs, where every check is one dictionary look-up. Like etcd's or TiKV's fail points, they let a
test kill a real run at an exact place instead of at a random time.
"""

from __future__ import annotations

import os
import signal

ENV = "CLM_FAILPOINT"


def hit(point: str) -> None:
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def write_hooks():
    """WriteHooks that hit `before_commit:<table>` / `after_commit:<table>` (None when unset)."""
    if not os.environ.get(ENV):
        return None
    from clm_spark.lake import WriteHooks

    return WriteHooks(
        before_commit=lambda table: hit(f"before_commit:{table}"),
        after_commit=lambda table: hit(f"after_commit:{table}"),
    )
