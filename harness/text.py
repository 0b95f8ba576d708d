"""How hwl puts numbers into sentences, in one place for the CLI, the coordinator's log and the reports."""
from __future__ import annotations


def count(n: int, one: str, many: str) -> str:
    """'1 device', '3 devices', '1,234 latencies': a number and its noun, singular for exactly one."""
    return f"{n:,} {one if n == 1 else many}"


__all__ = ["count"]
