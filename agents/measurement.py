"""The latency record: raw samples plus statistics derived on demand.

Modelled on ``torch.utils.benchmark``'s ``Measurement``: the record stores what was measured
(``spec``) and the raw samples; every statistic is a ``cached_property`` over them, so nothing
derived is stored and any statistic can be recomputed later. The dataclass is frozen, so the
samples cannot change under a cached statistic.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# Thresholds of measurement-method.md rule 18 (the same as torch's Measurement warnings).
IQR_WARN_THRESHOLD = 0.10
IQR_UNSTABLE_THRESHOLD = 0.25
DRIFT_THRESHOLD = 0.05
# Rule 7: a timed window in which anything else took this share of the measured cores' time (foreign CPU time plus
# steal, beyond the counters' resolution) makes the record `contended`. scripts/bench_core_load on a calm 2-core VM:
# a core with nothing else of ours <= 0.024 a 1 s window, an idle Ray 0.013 of a core, the supervising agent
# <= 0.004; one busy process on the core 0.45 to 0.75. Like the IQR's 10 %, it allows some noise, not a competitor.
CONTENDED_THRESHOLD = 0.10
RESOLUTION_TICKS = 2  # a window's foreign time is the difference of counters that move in whole ticks
REQUEUE_FLAGS = ("unstable", "drifting", "contended")  # flags whose record is measured again (rule 18)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so a record's CI is reproducible from its samples
FORMAT_VERSION = 1


@dataclass(frozen=True)
class MeasurementSpec:
    """What was measured; hashable, the key :meth:`Measurement.merge` groups by.

    Parameters
    ----------
    arch : str
        Architecture key or model label ("nb201:123", a file name, ...).
    model_sha256 : str
        Hash of the model file ("" for a model built from an architecture key).
    input_shape : tuple of int
    batch : int
    dtype : str
    runtime, runtime_version, provider : str
        e.g. "onnxruntime", "1.32.0", "CPUExecutionProvider".
    build_hash : str
        Hash of the compiled artifact (TVM library), "" when there is none.
    threads : int
    cores : tuple of int
        Core set the measuring process was pinned to (empty: not pinned).
    profile : str
        Timing profile name ("quick" or "standard").
    """

    arch: str = ""
    model_sha256: str = ""
    input_shape: tuple = ()
    batch: int = 1
    dtype: str = "float32"
    runtime: str = ""
    runtime_version: str = ""
    provider: str = ""
    build_hash: str = ""
    threads: int = 1
    cores: tuple = ()
    profile: str = ""


def _quantiles(x: np.ndarray, qs) -> np.ndarray:
    return np.quantile(x, qs)


@dataclass(frozen=True)
class Measurement:
    """One latency record.

    Parameters
    ----------
    spec : MeasurementSpec
    block_size : int
        Inferences per timed block (k of rule 12); each sample is a block's mean.
    samples_ns : tuple of tuple of float
        Per repeat, the per-inference mean of every timed block, in nanoseconds.
    init_ms : float or None
        Model load / compile time (outside the samples).
    first_ms : float or None
        First inference (outside the samples).
    fingerprint_id : str
        Id of the environment fingerprint of the agent session.
    metadata : dict
        Anything else worth keeping (policy, warmup runs, labels, start time). Dropped by merge.
    core_load : dict or None
        What else ran on the measured cores, per timed window (:mod:`agents.core_load`): ``cores``, ``tick_s``,
        ``foreign_cpu_frac``, ``steal_frac`` and ``window_s`` lists; or ``{"unknown": why}`` where the counters
        could not be read (None: a record from before the check).

    Attributes
    ----------
    times_ms : ndarray
        All samples in milliseconds, flattened.
    median_ms, mean_ms, std_ms, min_ms, p10_ms, p25_ms, p75_ms, p90_ms, p95_ms, iqr_ms : float
    iqr_over_median : float
    iq_mean_ms : float
        Mean of the samples between p25 and p75 (EAGLE's statistic).
    median_ci95_ms : tuple of float
        Bootstrap 95 % interval of the median (fixed seed).
    repeat_medians_ms : ndarray
    label_ms : float
        Median of the per-repeat medians: the predictor's label (rule 17).
    drift : float
        (max - min) of the repeat medians over their median.
    foreign_cpu_frac_max, steal_frac_max : float or None
        The worst window's share of the cores' time taken by something else / stolen (None: unknown).
    flags : tuple of str
        Subset of ("warn", "unstable", "drifting", "contended").
    """

    spec: MeasurementSpec
    block_size: int
    samples_ns: tuple
    init_ms: float | None = None
    first_ms: float | None = None
    fingerprint_id: str = ""
    metadata: dict = field(default_factory=dict, compare=False)
    core_load: dict | None = field(default=None, compare=False)

    def __post_init__(self):
        if not self.samples_ns or not all(len(r) for r in self.samples_ns):
            raise ValueError("a Measurement needs at least one sample in every repeat")

    # ---- statistics -------------------------------------------------------------------
    @cached_property
    def times_ms(self) -> np.ndarray:
        return np.concatenate([np.asarray(r, dtype=np.float64) for r in self.samples_ns]) / 1e6

    @cached_property
    def _q(self) -> np.ndarray:
        return _quantiles(self.times_ms, [0.10, 0.25, 0.50, 0.75, 0.90, 0.95])

    @cached_property
    def median_ms(self) -> float:
        return float(self._q[2])

    @cached_property
    def mean_ms(self) -> float:
        return float(self.times_ms.mean())

    @cached_property
    def std_ms(self) -> float:
        return float(self.times_ms.std(ddof=1)) if self.times_ms.size > 1 else 0.0

    @cached_property
    def min_ms(self) -> float:
        return float(self.times_ms.min())

    @property
    def p10_ms(self) -> float:
        return float(self._q[0])

    @property
    def p25_ms(self) -> float:
        return float(self._q[1])

    @property
    def p75_ms(self) -> float:
        return float(self._q[3])

    @property
    def p90_ms(self) -> float:
        return float(self._q[4])

    @property
    def p95_ms(self) -> float:
        return float(self._q[5])

    @property
    def iqr_ms(self) -> float:
        return float(self._q[3] - self._q[1])

    @property
    def iqr_over_median(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")

    @cached_property
    def iq_mean_ms(self) -> float:
        t = self.times_ms
        inner = t[(t >= self._q[1]) & (t <= self._q[3])]
        # two distinct samples leave none between the quartiles; the middle of them is the median
        return float(inner.mean()) if inner.size else self.median_ms

    @cached_property
    def median_ci95_ms(self) -> tuple[float, float]:
        t = self.times_ms
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        idx = rng.integers(0, t.size, size=(BOOTSTRAP_RESAMPLES, t.size))
        medians = np.median(t[idx], axis=1)
        lo, hi = np.quantile(medians, [0.025, 0.975])
        return float(lo), float(hi)

    @cached_property
    def repeat_medians_ms(self) -> np.ndarray:
        return np.array([np.median(np.asarray(r, dtype=np.float64)) for r in self.samples_ns]) / 1e6

    @cached_property
    def label_ms(self) -> float:
        return float(np.median(self.repeat_medians_ms))

    @cached_property
    def drift(self) -> float:
        m = self.repeat_medians_ms
        return float((m.max() - m.min()) / self.label_ms) if self.label_ms > 0 else 0.0

    def _window_loads(self, key: str) -> list[float] | None:
        load = self.core_load or {}
        return load.get(key) if "unknown" not in load else None

    @cached_property
    def foreign_cpu_frac_max(self) -> float | None:
        fracs = self._window_loads("foreign_cpu_frac")
        return max(fracs) if fracs else None

    @cached_property
    def steal_frac_max(self) -> float | None:
        fracs = self._window_loads("steal_frac")
        return max(fracs) if fracs else None

    @cached_property
    def contended(self) -> bool:
        """Rule 7: in some window, something else took at least CONTENDED_THRESHOLD of the cores' time, by more
        than the counters' resolution (two ticks over the window's length on its cores)."""
        foreign, steal, window_s = (self._window_loads(k) for k in ("foreign_cpu_frac", "steal_frac", "window_s"))
        if not foreign:
            return False
        cores_per_tick = len(self.core_load["cores"]) / self.core_load["tick_s"]
        return any(f + s - RESOLUTION_TICKS / (w * cores_per_tick) >= CONTENDED_THRESHOLD
                   for f, s, w in zip(foreign, steal, window_s))

    @cached_property
    def flags(self) -> tuple[str, ...]:
        out = []
        if self.iqr_over_median >= IQR_WARN_THRESHOLD:
            out.append("warn")
        if self.iqr_over_median >= IQR_UNSTABLE_THRESHOLD:
            out.append("unstable")
        if len(self.samples_ns) > 1 and self.drift >= DRIFT_THRESHOLD:
            out.append("drifting")
        if self.contended:
            out.append("contended")
        return tuple(out)

    @property
    def is_unstable(self) -> bool:
        """True when the record should be re-queued (rule 18): unstable, drifting or contended (rule 7)."""
        return any(f in REQUEUE_FLAGS for f in self.flags)

    def meets_confidence(self, threshold: float = IQR_WARN_THRESHOLD) -> bool:
        return self.iqr_over_median < threshold

    def statistics(self) -> dict:
        """Every derived statistic, as plain floats (for JSON and tables)."""
        lo, hi = self.median_ci95_ms
        return {
            "label_ms": self.label_ms, "median_ms": self.median_ms, "mean_ms": self.mean_ms,
            "std_ms": self.std_ms, "min_ms": self.min_ms, "p10_ms": self.p10_ms,
            "p25_ms": self.p25_ms, "p75_ms": self.p75_ms, "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms, "iqr_ms": self.iqr_ms, "iqr_over_median": self.iqr_over_median,
            "iq_mean_ms": self.iq_mean_ms, "median_ci95_lo_ms": lo, "median_ci95_hi_ms": hi,
            "drift": self.drift, "n_samples": int(self.times_ms.size), "flags": list(self.flags),
            "foreign_cpu_frac_max": self.foreign_cpu_frac_max, "steal_frac_max": self.steal_frac_max,
        }

    # ---- serialisation and merging ---------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-able dict; derived statistics are added under ``stats`` for readers."""
        return {
            "format_version": FORMAT_VERSION,
            "spec": dataclasses.asdict(self.spec),
            "block_size": self.block_size,
            "samples_ns": [list(r) for r in self.samples_ns],
            "init_ms": self.init_ms,
            "first_ms": self.first_ms,
            "fingerprint_id": self.fingerprint_id,
            "metadata": self.metadata,
            "core_load": self.core_load,
            "stats": self.statistics(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Measurement":
        """Inverse of :meth:`to_dict` (``stats`` is ignored: it is recomputed)."""
        if d.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ValueError(f"measurement format {d['format_version']} is newer than this code's "
                             f"{FORMAT_VERSION}; update hwl")
        spec = dict(d["spec"])
        for k in ("input_shape", "cores"):
            spec[k] = tuple(spec.get(k, ()))
        return cls(spec=MeasurementSpec(**spec), block_size=int(d["block_size"]),
                   samples_ns=tuple(tuple(r) for r in d["samples_ns"]), init_ms=d.get("init_ms"),
                   first_ms=d.get("first_ms"), fingerprint_id=d.get("fingerprint_id", ""),
                   metadata=dict(d.get("metadata", {})), core_load=d.get("core_load"))

    @staticmethod
    def merge(measurements) -> list["Measurement"]:
        """Pool replicates with the same ``spec`` into one record per spec.

        Repeats are concatenated, and so are their windows' ``core_load`` where every record has it;
        ``metadata`` and ``init_ms``/``first_ms`` are dropped because they describe one session, not the
        pool; records with different block sizes or fingerprints are kept apart (they are not replicates
        of one another).
        """
        groups: dict = {}
        for m in measurements:
            groups.setdefault((m.spec, m.block_size, m.fingerprint_id), []).append(m)
        return [_pool(ms) for ms in groups.values()]

    def __repr__(self) -> str:
        flags = f" [{', '.join(self.flags)}]" if self.flags else ""
        return (f"Measurement({self.spec.arch or self.spec.model_sha256[:12]} on {self.spec.runtime}: "
                f"median {self.median_ms:.4f} ms, IQR {self.iqr_ms:.4f} ms, "
                f"{self.times_ms.size} samples x {self.block_size}{flags})")


def _pool_core_load(ms: list[Measurement]) -> dict:
    """The windows of every replicate, where all of them were watched on the same cores with the same tick."""
    loads = [m.core_load for m in ms]
    if any(not load or "unknown" in load for load in loads) or \
            len({(tuple(load["cores"]), load["tick_s"]) for load in loads}) > 1:
        return {"unknown": "not every pooled replicate was watched on the same cores"}
    keys = ("foreign_cpu_frac", "steal_frac", "window_s")
    return {**loads[0], **{k: [v for load in loads for v in load[k]] for k in keys}}


def _pool(ms: list[Measurement]) -> Measurement:
    first = ms[0]
    return Measurement(spec=first.spec, block_size=first.block_size,
                       samples_ns=tuple(r for m in ms for r in m.samples_ns),
                       fingerprint_id=first.fingerprint_id, core_load=_pool_core_load(ms))


__all__ = ["CONTENDED_THRESHOLD", "DRIFT_THRESHOLD", "IQR_UNSTABLE_THRESHOLD", "IQR_WARN_THRESHOLD", "Measurement",
           "MeasurementSpec", "REQUEUE_FLAGS"]
