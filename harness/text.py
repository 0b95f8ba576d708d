"""How hwl puts numbers and names into sentences, in one place for the CLI, the coordinator's log and the reports."""
from __future__ import annotations


def count(n: int, one: str, many: str) -> str:
    """'1 device', '3 devices', '1,234 latencies': a number and its noun, singular for exactly one."""
    return f"{n:,} {one if n == 1 else many}"


def without_name(name: str, message: str) -> str:
    """``message`` without a leading ``'name: '``, for a line that names the device already: a device session's
    errors start with its name ('pi-1: cannot start ...'), which 'device pi-1: ...; last try: pi-1: ...' said twice."""
    return message.removeprefix(f"{name}: ")


__all__ = ["count", "without_name"]
