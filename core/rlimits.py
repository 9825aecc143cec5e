"""Kernel limits of a job, applied first thing in its process (sandbox bootstrap and zygote fork alike).

Standard library only: it runs before torch or any project module is imported, so that every later
allocation already counts against RLIMIT_AS.
"""

from __future__ import annotations

import resource


def apply_rlimits(rlimits: dict[str, tuple[int, int]]) -> None:
    """Set each RLIMIT_* to (soft, hard), never above the hard limit this process already has (raising a hard
    limit needs privileges, and a lower one set by the user's shell is theirs to keep)."""
    for name, (soft, hard) in rlimits.items():
        kind = getattr(resource, name)
        cap = resource.getrlimit(kind)[1]
        cap = hard if cap == resource.RLIM_INFINITY else min(hard, cap)
        resource.setrlimit(kind, (min(soft, cap), cap))
