"""Memory budgets (standard library only): what a size option may ask for is derived from the memory
this machine has available, so a huge value is refused in one line before anything is allocated
(docs/reliability.md, "Sizes")."""

from __future__ import annotations

import os

BUDGET_SHARE = 4  # a size option may take a quarter of the memory available when the command starts


def available_bytes() -> int:
    """The memory available to this process now (Linux's MemAvailable; else the physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 8 << 30


def default_budget() -> int:
    """The bytes a size option may take by default: ``available_bytes() // BUDGET_SHARE``."""
    return available_bytes() // BUDGET_SHARE


def gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.2f} GB"
