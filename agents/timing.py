"""Timing loops: first inference, warmup, block-size calibration and timed windows.

The algorithm (measurement-method.md rules 9-13)::

    first_ns = block(1)                           # kept apart, never a sample
    k = 1
    while warmup not done (>= warmup_min_runs runs and >= warmup_min_s):
        t = block(k); if t < block_min: k *= 2    # warmup doubles as calibration
    while block(k) < block_min: k *= 2            # finish calibration (sub-ms models)
    repeat `repeats` times:                       # one timed window each
        blocks of k until >= window_min_runs runs and >= window_min_s, or the next block would pass window_max_s
        sample = block time / k                   # per-inference mean of the block
        what else ran on our cores meanwhile      # rule 7: agents.core_load, when a watch is given

``block(k)`` runs k inferences back to back and returns their elapsed nanoseconds, synchronised
(see :func:`block_timer`). A runtime with its own device timer (TVM's ``time_evaluator``) passes
its own ``block`` function instead. Larger k hides clock and loop overhead but averages away
the per-inference spread, so k stops growing at the first block >= ``block_min_s`` (1 ms on
CPU, 100 ms on GPU, as in torch's ``blocked_autorange`` and TVM's ``min_repeat_ms``).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

from agents.errors import BadRequest, TooSlowForPolicy


# The longest pause before a model: measurement-method.md's per-model limit (rule 21, 300 s). A device that needs
# longer to cool waits on its sensors instead (max_temp_c, rule 6); 1e9 s passed every check and slept for decades.
MAX_COOLDOWN_S = 300.0


@dataclass(frozen=True)
class TimingPolicy:
    """How long and how often to time; every field is stored with the record.

    Parameters
    ----------
    name : str
        Profile name ("standard", "quick").
    warmup_min_runs, warmup_min_s :
        Warmup lasts at least this many inferences and this long (rule 10).
    repeats : int
        Timed windows per model (rule 11).
    window_min_runs, window_min_s, window_max_s :
        A window ends once it has both minima, or at the cap (rule 11).
    block_min_s, gpu_block_min_s :
        k grows until one block takes at least this long (rule 12).
    gpu_warmup_min_s : float
        Warmup floor on GPUs (rule 10: 300 ms of back-to-back load).
    cooldown_s : float
        Pause before each model (rule 8), outside every timed window.
    window_timeout_s, model_timeout_s : float
        The measuring process is killed past these limits (rule 21).
    max_temp_c, temp_poll_s, temp_give_up_s : float
        Before each model, wait (polling every ``temp_poll_s``) until the hottest sensor is
        under ``max_temp_c``; give up after ``temp_give_up_s`` (rule 6). 0 disables the gate,
        the default, because most servers and VMs expose no sensor; Pi and phone profiles set it.
    """

    name: str = "standard"
    warmup_min_runs: int = 10
    warmup_min_s: float = 2.0
    repeats: int = 5
    window_min_runs: int = 50
    window_min_s: float = 1.0
    window_max_s: float = 150.0
    block_min_s: float = 1e-3
    gpu_block_min_s: float = 0.1
    gpu_warmup_min_s: float = 0.3
    max_block_size: int = 1 << 20
    cooldown_s: float = 0.2
    window_timeout_s: float = 150.0
    model_timeout_s: float = 300.0
    max_temp_c: float = 0.0
    temp_poll_s: float = 2.0
    temp_give_up_s: float = 200.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            val = getattr(self, f.name)
            # JSON's 1e400 and TOML's inf are floats: an infinite cooldown was an OverflowError traceback
            if f.name != "name" and (isinstance(val, bool) or not isinstance(val, (int, float))
                                     or not math.isfinite(val) or val < 0):
                raise BadRequest(f"timing policy field {f.name!r} must be a finite number >= 0, got {val!r}")
            if isinstance(f.default, int) and not isinstance(val, int):  # counts: 1.5 repeats means nothing
                raise BadRequest(f"timing policy field {f.name!r} must be a whole number, got {val!r}")
        if self.cooldown_s > MAX_COOLDOWN_S:
            raise BadRequest(f"timing policy field 'cooldown_s' must be at most {MAX_COOLDOWN_S:g} s (a device that "
                             f"needs longer to cool sets max_temp_c), got {self.cooldown_s!r}")
        if self.repeats < 1 or self.max_block_size < 1:
            raise BadRequest("timing policy needs repeats >= 1 and max_block_size >= 1")
        if min(self.window_max_s, self.window_timeout_s, self.model_timeout_s) <= 0:  # 0 would kill every run
            raise BadRequest("timing policy needs window_max_s, window_timeout_s and model_timeout_s > 0")

    @classmethod
    def quick(cls, **overrides) -> "TimingPolicy":
        """Short profile for tests and demos: 3 windows of >= 10 runs and 0.1 s, little warmup."""
        base = dict(name="quick", warmup_min_runs=3, warmup_min_s=0.05, repeats=3,
                    window_min_runs=10, window_min_s=0.1, window_max_s=10.0, cooldown_s=0.0,
                    gpu_warmup_min_s=0.05, gpu_block_min_s=0.01,
                    window_timeout_s=30.0, model_timeout_s=120.0)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def standard(cls, **overrides) -> "TimingPolicy":
        """The defaults of measurement-method.md."""
        return cls(**overrides)

    @classmethod
    def from_profile(cls, profile: str, overrides: dict | None = None) -> "TimingPolicy":
        """Policy for a profile name plus a dict of field overrides (names checked)."""
        if profile not in PROFILES:
            raise BadRequest(f"unknown timing profile {profile!r}; valid: {', '.join(PROFILES)}")
        overrides = dict(overrides or {})
        valid = {f.name for f in dataclasses.fields(cls)} - {"name"}
        bad = sorted(set(overrides) - valid)
        if bad:
            raise BadRequest(f"unknown timing policy field(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
        return PROFILES[profile](**overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def longest_s(self) -> float:
        """The longest the agent may spend on one model: the thermal wait, the cooldown, the model's limit."""
        thermal = self.temp_give_up_s + self.temp_poll_s if self.max_temp_c > 0 else 0.0
        return thermal + self.cooldown_s + self.model_timeout_s


PROFILES = {"quick": TimingPolicy.quick, "standard": TimingPolicy.standard}


@dataclass(frozen=True)
class Timing:
    """Raw output of :func:`time_blocks`; nanoseconds throughout."""

    block_size: int
    samples_ns: tuple  # per repeat, per-inference block means
    first_ns: int | None  # None when the runtime reports no first inference (command)
    warmup_runs: int
    warmup_ns: int
    core_load: dict | None = None  # what else ran on our cores per window (agents.core_load); None: not watched


def block_timer(run_once: Callable[[], object], *, clock: Callable[[], int] = time.perf_counter_ns,
                sync: Callable[[], object] | None = None) -> Callable[[int], int]:
    """A ``block(k)`` that runs ``run_once`` k times, calls ``sync`` and returns elapsed ns.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before the clock is read again, so
    asynchronous devices are timed to completion (rule 13).
    """
    def block(k: int) -> int:
        t0 = clock()
        for _ in range(k):
            run_once()
        if sync is not None:
            sync()
        return clock() - t0
    return block


def _window_done(policy: TimingPolicy, runs: int, elapsed_ns: int, longest_block_ns: int) -> bool:
    """The stop rule of one timed window, kept apart from the loop. The cap is not crossed: no block starts that
    would end past it, judged by the window's longest call of ``block`` so far. (A window that ended at the first
    block past its cap outlived the per-window limit, by default the same 150 s, and was killed as a timeout.)"""
    if elapsed_ns + longest_block_ns > policy.window_max_s * 1e9:
        return True
    return runs >= policy.window_min_runs and elapsed_ns >= policy.window_min_s * 1e9


def least_seconds_left_to_time(policy: TimingPolicy, run_ns: float, warmup_runs_left: int,
                               warmup_s_left: float) -> float:
    """A lower bound of the time the rest of the policy takes at ``run_ns`` an inference: the rest of the warmup,
    one calibration block, then ``repeats`` windows that each end at their minima or just short of their cap."""
    run_s = run_ns / 1e9
    warmup = max(warmup_runs_left * run_s, warmup_s_left)
    window = max(run_s, min(max(policy.window_min_runs * run_s, policy.window_min_s), policy.window_max_s - run_s))
    return warmup + run_s + policy.repeats * window


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _check_it_fits(policy: TimingPolicy, seconds_left: Callable[[], float] | None, run_ns: float, first_ns: int,
                   warmup_runs_left: int, warmup_s_left: float) -> None:
    """Raise TooSlowForPolicy when even at ``run_ns`` an inference (the fastest so far) the rest of the policy
    cannot end before the per-model limit: the numbers, and the remedies, go in its message."""
    if seconds_left is None:
        return
    needed_s = least_seconds_left_to_time(policy, run_ns, warmup_runs_left, warmup_s_left)
    left_s = seconds_left()
    if needed_s <= left_s:
        return
    raise TooSlowForPolicy(
        f"one inference takes at least {run_ns / 1e6:.1f} ms here (the first: {first_ns / 1e6:.1f} ms), so this "
        f"policy (a warmup of {_runs(policy.warmup_min_runs)}, then {policy.repeats} windows of at least "
        f"{_runs(policy.window_min_runs)}, each capped at {policy.window_max_s:g} s) needs at least {needed_s:.1f} s "
        f"more, where {max(left_s, 0):.1f} s of model_timeout_s = {policy.model_timeout_s:g} s are left: raise "
        "model_timeout_s, or lower window_min_runs, repeats or warmup_min_runs (the profile's [measurement.policy]; "
        "hwl measure --policy FIELD=VALUE); stopped in the warmup instead of at the limit")


def time_blocks(block: Callable[[int], int], policy: TimingPolicy, *,
                clock: Callable[[], int] = time.perf_counter_ns, on_gpu: bool = False,
                on_window: Callable[[str], object] | None = None,
                first: Callable[[], int] | None = None,
                seconds_left: Callable[[], float] | None = None, watch=None) -> Timing:
    """Run the algorithm of the module docstring.

    Parameters
    ----------
    block : callable
        ``block(k) -> ns`` for k back-to-back inferences (see :func:`block_timer`).
    policy : TimingPolicy
    clock : callable
        Monotonic nanosecond clock for warmup and window lengths (injectable for tests).
    on_gpu : bool
        Use the GPU block and warmup floors.
    on_window : callable, optional
        Called with "warmup" and "window <i>" as each phase starts (the child process reports
        progress with it, so the parent can enforce the per-window time limit).
    first : callable, optional
        ``first() -> ns`` for the first inference, when ``block(1)`` cannot time it.
    seconds_left : callable, optional
        Seconds left before the per-model limit (``model_timeout_s``). After each warmup block, a model whose
        fastest inference so far is too slow for the rest of the policy to end in that time raises
        :class:`~agents.errors.TooSlowForPolicy` at once, rather than being killed at the limit (rule 21).
    watch : agents.core_load.CoreLoadWatch, optional
        Started and stopped around each timed window, to measure what else ran on the cores (rule 7).

    Raises
    ------
    TooSlowForPolicy
    """
    block_min_ns = (policy.gpu_block_min_s if on_gpu else policy.block_min_s) * 1e9
    warmup_min_ns = max(policy.warmup_min_s, policy.gpu_warmup_min_s if on_gpu else 0.0) * 1e9
    notify = on_window or (lambda phase: None)

    first_ns = int(first() if first is not None else block(1))
    notify("warmup")
    k, runs, t0, fastest_ns = 1, 0, clock(), float("inf")
    while runs < policy.warmup_min_runs or clock() - t0 < warmup_min_ns:
        t = block(k)
        runs += k
        fastest_ns = min(fastest_ns, t / k)  # the first inference is left out: it is often slower (rule 9)
        _check_it_fits(policy, seconds_left, fastest_ns, first_ns, max(0, policy.warmup_min_runs - runs),
                       (warmup_min_ns - (clock() - t0)) / 1e9)
        if t < block_min_ns and k < policy.max_block_size:
            k = min(2 * k, policy.max_block_size)
    warmup_ns, warmup_runs = clock() - t0, runs
    while k < policy.max_block_size and block(k) < block_min_ns:
        k = min(2 * k, policy.max_block_size)

    repeats, loads = [], []
    for i in range(policy.repeats):
        # Read before the notice: the parent's limit runs from its reading of it, and the write that wakes it may
        # leave this process waiting for its core (up to 7 ms measured under load). The watch's reads count too.
        opened = clock()
        notify(f"window {i}")
        if watch is not None:
            watch.start()
        start = clock()
        read_ns = start - opened  # its read after the window is about as long as this one
        samples, runs, longest, before = [], 0, 0, start
        while True:
            samples.append(block(k) / k)
            now = clock()  # a call's own length: TVM's returns several blocks timed at once, or one kept back
            runs, longest, before = runs + k, max(longest, now - before), now
            if _window_done(policy, runs, now - opened + read_ns, longest):
                break
        if watch is not None:
            loads.append(watch.stop())
        repeats.append(tuple(samples))
    return Timing(block_size=k, samples_ns=tuple(repeats), first_ns=first_ns,
                  warmup_runs=warmup_runs, warmup_ns=warmup_ns,
                  core_load=watch.summary(loads) if watch is not None else None)


__all__ = ["PROFILES", "Timing", "TimingPolicy", "block_timer", "least_seconds_left_to_time", "time_blocks"]
