"""Measurement statistics on known samples, and the timing loop driven by an injected clock."""
import json
import math

import numpy as np
import pytest

from agents.errors import BadRequest, TooSlowForPolicy
from agents.measurement import Measurement, MeasurementSpec
from agents.timing import TimingPolicy, block_timer, time_blocks

SPEC = MeasurementSpec(arch="nb201:1", runtime="onnxruntime", threads=1, cores=(0,), profile="quick")


def ms(*repeats):
    """Measurement from per-repeat samples given in milliseconds."""
    return Measurement(spec=SPEC, block_size=1, samples_ns=tuple(tuple(v * 1e6 for v in r) for r in repeats))


def test_statistics_of_one_to_five():
    m = ms([1, 2, 3, 4, 5])
    assert m.median_ms == pytest.approx(3) and m.mean_ms == pytest.approx(3) and m.min_ms == pytest.approx(1)
    assert m.std_ms == pytest.approx(math.sqrt(2.5))
    assert (m.p10_ms, m.p25_ms, m.p75_ms, m.p90_ms, m.p95_ms) == pytest.approx((1.4, 2, 4, 4.6, 4.8))
    assert m.iqr_ms == pytest.approx(2) and m.iqr_over_median == pytest.approx(2 / 3)
    assert m.iq_mean_ms == pytest.approx(3)  # mean of 2, 3, 4
    assert m.label_ms == pytest.approx(3)
    assert m.flags == ("warn", "unstable") and m.is_unstable and not m.meets_confidence()


def test_inter_quartile_mean_ignores_outliers():
    m = ms([10, 10, 10, 10, 11, 11, 11, 11, 1000])
    assert m.iq_mean_ms == pytest.approx(np.mean([10, 10, 10, 11, 11, 11]))
    assert m.mean_ms > 100 and m.median_ms == pytest.approx(11)


def test_two_distinct_samples_have_an_inter_quartile_mean_and_make_json():
    # a command tool printing one latency per run, with repeats = 2: no sample lies between the quartiles,
    # the mean of none was NaN, and the agent's reply (JSON without NaN) died with the measurement
    m = ms([2.0], [3.0])
    assert m.iq_mean_ms == pytest.approx(2.5) == m.median_ms
    assert json.loads(json.dumps(m.to_dict(), allow_nan=False))["stats"]["iq_mean_ms"] == pytest.approx(2.5)


def test_label_is_median_of_repeat_medians_and_drift_is_flagged():
    m = ms([1, 1, 9], [2, 2, 2], [3, 3, 3])
    assert list(m.repeat_medians_ms) == pytest.approx([1, 2, 3])
    assert m.label_ms == pytest.approx(2)
    assert m.drift == pytest.approx(1.0)
    assert "drifting" in m.flags


def test_stable_record_has_no_flags():
    m = ms([10.0, 10.1, 9.9, 10.0], [10.05, 10.05, 9.95, 10.05])
    assert m.flags == () and m.meets_confidence() and not m.is_unstable
    assert m.drift == pytest.approx(0.05 / 10.025)


def test_warn_threshold_between_ten_and_twenty_five_percent():
    m = ms([100, 100, 106, 115, 115, 115])  # p25 101.5, p75 115 -> IQR/median 0.1218
    assert m.flags == ("warn",)


def test_bootstrap_ci_brackets_median_and_is_reproducible():
    rng = np.random.default_rng(3)
    samples = list(rng.normal(5.0, 0.2, size=400))
    a, b = ms(samples), ms(samples)
    lo, hi = a.median_ci95_ms
    assert lo <= a.median_ms <= hi and hi - lo < 0.1
    assert a.median_ci95_ms == b.median_ci95_ms
    assert ms([7, 7, 7]).median_ci95_ms == pytest.approx((7, 7))
    narrow = ms(list(rng.normal(5.0, 0.2, size=4000))).median_ci95_ms
    assert narrow[1] - narrow[0] < hi - lo


def test_record_survives_json_and_merge_pools_replicates():
    m = ms([1, 2, 3], [2, 3, 4])
    again = Measurement.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m and again.statistics() == m.statistics()
    other = Measurement(spec=MeasurementSpec(arch="nb201:2"), block_size=1, samples_ns=((5e6,),))
    merged = Measurement.merge([m, ms([3, 4, 5]), other])
    assert len(merged) == 2
    pooled = next(x for x in merged if x.spec == SPEC)
    assert len(pooled.samples_ns) == 3 and pooled.label_ms == pytest.approx(3)
    assert pooled.metadata == {} and pooled.init_ms is None


def test_empty_record_is_refused():
    with pytest.raises(ValueError, match="at least one sample"):
        Measurement(spec=SPEC, block_size=1, samples_ns=((),))


class FakeDevice:
    """A model whose every inference costs `cost_ns` on a clock that only it advances."""

    def __init__(self, cost_ns):
        self.cost_ns, self.now, self.calls = cost_ns, 0, 0

    def clock(self):
        return self.now

    def run_once(self):
        self.now += self.cost_ns
        self.calls += 1


def test_sub_millisecond_model_is_timed_in_blocks_of_at_least_one_ms():
    dev = FakeDevice(300_000)  # 0.3 ms
    phases = []
    t = time_blocks(block_timer(dev.run_once, clock=dev.clock), TimingPolicy.quick(), clock=dev.clock,
                    on_window=phases.append)
    assert t.block_size == 4  # 1 -> 2 -> 4: the first block >= 1 ms
    assert phases == ["warmup", "window 0", "window 1", "window 2"]
    assert len(t.samples_ns) == 3
    for window in t.samples_ns:
        assert all(s == pytest.approx(300_000) for s in window)
        assert len(window) * 4 >= 10 and len(window) * 1.2e6 >= 0.1e9  # both minima met
        assert (len(window) - 1) * 1.2e6 < 0.1e9  # and not one block more
    assert t.first_ns == 300_000 and t.warmup_runs >= 3 and t.warmup_ns >= 0.05e9


def test_slow_model_needs_min_runs_and_window_cap_stops_it():
    dev = FakeDevice(50_000_000)  # 50 ms: 10 runs take 0.5 s > 0.1 s
    t = time_blocks(block_timer(dev.run_once, clock=dev.clock), TimingPolicy.quick(), clock=dev.clock)
    assert t.block_size == 1 and [len(w) for w in t.samples_ns] == [10, 10, 10]
    dev = FakeDevice(2_000_000_000)  # 2 s: the 5 s cap ends each window before 10 runs, and is not crossed
    t = time_blocks(block_timer(dev.run_once, clock=dev.clock), TimingPolicy.quick(window_max_s=5.0),
                    clock=dev.clock)
    assert [len(w) for w in t.samples_ns] == [2, 2, 2]  # a third run would end at 6 s, past the cap


def test_a_wait_for_the_core_after_a_windows_notice_counts_against_its_cap():
    """The parent's per-window limit runs from its reading of the window's notice, and the write that wakes it may
    leave the child waiting for its core. The window's clock started after that wait, so a window that reached its
    cap ended past the limit by it: killed as a timeout (1 in 8 under load, test_agent_runtimes' cap test)."""
    dev = FakeDevice(2_000_000_000)  # 2 s a run, windows capped at 5 s
    read_at = []

    def read_then_core_lost(phase):
        if phase.startswith("window"):
            read_at.append(dev.now)  # the parent reads the notice as it is written
        dev.now += 1_500_000_000  # then the child waits 1.5 s for its core

    t = time_blocks(block_timer(dev.run_once, clock=dev.clock), TimingPolicy.quick(window_max_s=5.0), clock=dev.clock,
                    on_window=read_then_core_lost)
    ends = read_at[1:] + [dev.now]  # each window ends as the next notice is written, the last as the timing returns
    assert [end - read for read, end in zip(read_at, ends)] == [3_500_000_000] * 3  # one run after the wait
    assert [len(w) for w in t.samples_ns] == [1, 1, 1]


def _left_of_the_limit(dev, policy):
    """seconds_left of a measurement that started when the fake device's clock read 0."""
    return lambda: policy.model_timeout_s - dev.now / 1e9


def test_a_model_too_slow_for_the_policy_stops_in_its_warmup_with_the_numbers():
    """The method's policy (10 warmup runs, 5 windows of >= 50 runs) cannot end within 300 s at 1.2 s an inference:
    such a model ran until the per-model limit killed it, every attempt. It now stops after one warmup run."""
    policy = TimingPolicy.standard()
    dev = FakeDevice(1_200_000_000)
    with pytest.raises(TooSlowForPolicy) as err:
        time_blocks(block_timer(dev.run_once, clock=dev.clock), policy, clock=dev.clock,
                    seconds_left=_left_of_the_limit(dev, policy))
    assert dev.calls == 2  # the first inference and one warmup run
    said = str(err.value)
    assert "at least 1200.0 ms" in said and "a warmup of 10 runs, then 5 windows of at least 50 runs" in said
    assert "needs at least 312.0 s more, where 297.6 s of model_timeout_s = 300 s are left" in said
    assert "raise model_timeout_s, or lower window_min_runs, repeats or warmup_min_runs" in said


def test_a_model_the_policy_fits_in_its_limit_is_timed_as_before():
    policy = TimingPolicy.standard()
    dev = FakeDevice(1_000_000_000)  # 1 s: 10 + 1 + 5 x 50 runs take 261 s of the 300
    t = time_blocks(block_timer(dev.run_once, clock=dev.clock), policy, clock=dev.clock,
                    seconds_left=_left_of_the_limit(dev, policy))
    assert [len(w) for w in t.samples_ns] == [50] * 5 and dev.now / 1e9 == 262  # the first inference too


def test_block_timer_synchronises_before_reading_the_clock():
    dev = FakeDevice(1_000)
    syncs = []
    block = block_timer(dev.run_once, clock=dev.clock, sync=lambda: syncs.append(dev.calls))
    assert block(5) == 5_000 and syncs == [5]


def test_gpu_floors_apply_on_gpu():
    dev = FakeDevice(300_000)
    t = time_blocks(block_timer(dev.run_once, clock=dev.clock), TimingPolicy.quick(gpu_block_min_s=0.01),
                    clock=dev.clock, on_gpu=True)
    assert t.block_size == 64  # 64 x 0.3 ms = 19.2 ms >= 10 ms; 32 x 0.3 = 9.6 ms is not


def test_standard_profile_is_the_method_defaults():
    p = TimingPolicy.standard()
    assert (p.warmup_min_runs, p.warmup_min_s, p.repeats, p.window_min_runs, p.window_min_s, p.window_max_s,
            p.block_min_s, p.gpu_block_min_s, p.cooldown_s, p.window_timeout_s, p.model_timeout_s, p.temp_poll_s,
            p.temp_give_up_s) == \
           (10, 2.0, 5, 50, 1.0, 150.0, 1e-3, 0.1, 0.2, 150.0, 300.0, 2.0, 200.0)
    assert TimingPolicy.from_profile("quick", {"repeats": 2}) == TimingPolicy.quick(repeats=2)


@pytest.mark.parametrize("profile, overrides, match", [
    ("slow", {}, "unknown timing profile 'slow'"),
    ("quick", {"repeat": 2}, "unknown timing policy field"),
    ("quick", {"repeats": -1}, "must be a finite number >= 0"),
    ("quick", {"cooldown_s": float("inf")}, "'cooldown_s' must be a finite number"),  # JSON's 1e400: a traceback
    ("quick", {"warmup_min_s": float("nan")}, "'warmup_min_s' must be a finite number"),
    ("quick", {"repeats": 0}, "repeats >= 1"),
])
def test_bad_policy_is_refused(profile, overrides, match):
    with pytest.raises(BadRequest, match=match):
        TimingPolicy.from_profile(profile, overrides)


def test_thermal_gate_waits_for_the_device_to_cool_and_gives_up():
    from agents.child import wait_until_cool
    from agents.errors import DeviceTooHot

    now = [0.0]
    temps = iter([80.0, 75.0, 69.0])
    policy = TimingPolicy.quick(max_temp_c=70, temp_poll_s=2, temp_give_up_s=10)
    waited = wait_until_cool(policy, read_temp_c=lambda: next(temps), clock=lambda: now[0],
                             sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert waited == 4.0
    with pytest.raises(DeviceTooHot, match="over the 70 C limit"):
        wait_until_cool(policy, read_temp_c=lambda: 90.0, clock=lambda: now[0],
                        sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert wait_until_cool(TimingPolicy.quick(), read_temp_c=lambda: 999.0) == 0.0  # gate off by default
    # the host waits for a reply through the whole gate too, or a cooling device would look lost
    assert policy.longest_s == 10 + 2 + policy.cooldown_s + policy.model_timeout_s
    assert TimingPolicy.quick().longest_s == TimingPolicy.quick().model_timeout_s
