"""What an onboarding hands back besides the model: the predicted table and a short report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.text import count
from predictors.baselines.copy_device import best_correlated
from predictors.layer_costs import fit_layer_costs
from predictors.onboard.posterior import spearman_rows
from predictors.protocol import FEW_SCORED
from predictors.recommended import ADDITIVE_LAT
from spaces import nb201

TABLE_FORMAT_VERSION = "1"


def predicted_table(loop, space: str, device: str) -> pd.DataFrame:
    """One row per candidate: ``arch`` (+ ``arch_str`` for NB201), ``device``, ``predicted_ms``
    (as ``hwl predict`` names it: a ``latency_ms`` column would import as measurements), ``uncertainty``
    (standard deviation of log-latency: 0.05 is about +-5 %; for ``phys_bayes`` the posterior's of a
    latency relative to its prediction, the fitted noise included, an ensemble's spread for others),
    ``measured_ms`` (the measurement, where there is one)."""
    pred_ms, spread = loop.predict_table()
    keys = list(loop.candidates)
    frame = pd.DataFrame({"arch": keys})
    if space == "nb201":
        frame["arch_str"] = [nb201.to_string(k) for k in keys]
    frame["device"] = device
    frame["predicted_ms"] = pred_ms
    frame["uncertainty"] = spread
    frame["measured_ms"] = [loop.measured.get(k, np.nan) for k in keys]
    frame.attrs["hwl_format"] = f"hwl-onboard-table/{TABLE_FORMAT_VERSION}"
    return frame


# A runner-up named beside the device that resembles most: the closest train device in at least this share of the
# posterior's draws (the answer is then a near tie, which the measurements do not settle).
ALSO_CLOSE_SHARE = 0.2
RESEMBLE_DRAWS = 64


def train_latencies(tables: dict, archs: list, *, space: str, fits: dict | None = None) -> tuple[dict, dict]:
    """(device -> latencies of ``archs``, device -> basis) of the train devices that can be compared on ``archs``.

    A device is compared on its table where that holds every arch; else, in a space whose networks time as the
    sum of their layers (FBNet: ``recommended.ADDITIVE_LAT``), on its additive fit (``fits[device]``, a
    pretrained method's, or fitted here), since random FBNet candidates are in no public table."""
    additive = ADDITIVE_LAT.get(space, False)
    latencies, basis = {}, {}
    for device, series in tables.items():
        if series.index.isin(archs).sum() == len(archs):
            latencies[device], basis[device] = series.reindex(archs).to_numpy(np.float64), "table"
        elif additive and (fit := (fits or {}).get(device) or fit_layer_costs(space, series)) is not None:
            latencies[device], basis[device] = np.asarray(fit.latency(archs), dtype=np.float64), "additive fit"
    return latencies, basis


def _cannot_say(space: str, n_archs: int) -> dict:
    fit_too = (", nor enough latencies of its own for an additive fit" if ADDITIVE_LAT.get(space, False)
               else f" (a {space} latency is no sum of per-layer costs, so none is predicted)")
    return {"device": None, "rho": None, "basis": None,
            "why": f"no train device's table holds all {n_archs} measured archs{fit_too}"}


def resembles_most(tables: dict, measured: dict, *, space: str, fits: dict | None = None) -> dict | None:
    """The train device whose latencies rank the measured archs best (the paper's Eq. 1 choice).

    ``basis`` says what the chosen device was compared on (:func:`train_latencies`). With no device to compare,
    ``device`` is None and ``why`` says so. :func:`resembles` answers from the adapted model instead."""
    archs = list(measured)
    if len(archs) < 2:
        return None
    latencies, basis = train_latencies(tables, archs, space=space, fits=fits)
    if not latencies:
        return _cannot_say(space, len(archs))
    frames = {d: pd.Series(v, index=archs) for d, v in latencies.items()}
    y = np.array([measured[a] for a in archs])
    device, rho = best_correlated(frames, archs, y)
    # 2 archs rank every device at +-1: the first of a tie was named alone, as if it were the answer
    tied = [d for d in _tied_at_best(y, latencies) if d != device]
    return {"device": device, "rho": round(float(rho), 4) if np.isfinite(rho) else None, "basis": basis[device],
            "tied_with": tied}


def _tied_at_best(y: np.ndarray, latencies: dict) -> list:
    """The train devices whose Spearman against ``y`` equals the best one's (round-off aside)."""
    names = list(latencies)
    rhos = _rho(y, np.stack([latencies[d] for d in names]))
    return [d for d, r in zip(names, rhos) if r >= rhos.max() - 1e-9]


def resembles(loop, tables: dict, *, space: str) -> dict | None:
    """The train device whose latencies rank most like the new device's, over the unmeasured candidates.

    A handful of measured archs ranks the train devices by chance (two devices that differ by 0.02 in rho
    over a space swap places on 5 archs), so the device's latencies are the adapted model's: its prediction
    of the round's pool, and, with a closed-form posterior, :data:`RESEMBLE_DRAWS` functions drawn from it.
    ``device`` is the train device most often closest over the draws, ``share`` that frequency (None without
    a posterior: the prediction's closest), ``also`` the runners-up closest in at least ``ALSO_CLOSE_SHARE``
    of the draws, ``rho`` the device's Spearman against the prediction on the ``archs`` pool archs. Without
    unmeasured candidates, as :func:`resembles_most` on the measured archs."""
    fits = getattr(loop.method, "lat_costs_", None)
    pool = loop.pool
    if len(loop.measured) < 2 or len(pool) < 3 or loop.adapted is None:
        return resembles_most(tables, loop.measured, space=space, fits=fits)
    latencies, basis = train_latencies(tables, pool, space=space, fits=fits)
    if not latencies:
        return _cannot_say(space, len(loop.measured))
    names = list(latencies)
    predicted = np.asarray(loop.adapted.predict(pool), dtype=np.float64)
    if np.ptp(predicted) == 0:  # a constant prediction ranks nothing: only the measured archs can say
        return resembles_most(tables, loop.measured, space=space, fits=fits)
    rho = {d: _rho(predicted, latencies[d][None, :])[0] for d in names}
    share = _closest_share(loop, latencies, names)
    if share is None:
        device = max(names, key=rho.get)
        also = []
    else:
        order = np.argsort(-share, kind="stable")
        device = names[order[0]]
        also = [{"device": names[i], "share": round(float(share[i]), 2)} for i in order[1:]
                if share[i] >= ALSO_CLOSE_SHARE]
    return {"device": device, "rho": round(float(rho[device]), 4), "basis": basis[device], "archs": len(pool),
            "share": None if share is None else round(float(share[names.index(device)]), 2), "also": also}


def _rho(ref: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Spearman of ``ref`` against each row; -1 where undefined (a constant row or ``ref``), never the closest."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(spearman_rows(ref, rows), nan=-1.0)


def _closest_share(loop, latencies: dict, names: list) -> np.ndarray | None:
    """Per train device (in ``names``' order), the share of the posterior's draws of the pool it ranks closest
    to; None without a closed-form posterior."""
    if loop.posterior is None or loop.pool_features is None:
        return None
    funcs, _ = loop.posterior.draws(loop.pool_features, RESEMBLE_DRAWS, loop.round_rng())
    rhos = np.stack([_rho(latencies[d], funcs) for d in names])                 # (devices, draws)
    return np.bincount(np.argmax(rhos, axis=0), minlength=len(names)) / funcs.shape[0]


def build_report(loop, result, *, space: str, device: str, method: str, tables: dict, resumed_from: int = 0,
                 campaigns=(), store: str | None = None) -> dict:
    """The report as a JSON-ready dict (see ``text_lines`` for the printed form)."""
    s = loop.settings
    return {
        "device": device, "space": space, "method": method, "store": store,
        "budget": s.budget, "target_rho": s.target_rho, "measurements_spent": result.spent,
        "measured": len(result.measured), "failed": [str(a) for a in result.failed],
        "already_in_store": resumed_from, "stop_reason": result.stop_reason,
        "estimated_rho": result.estimate.to_dict() if result.estimate else None,
        "resembles": resembles(loop, tables, space=space),
        "candidates": len(loop.candidates), "train_devices": list(tables),
        "unmeasured": len(loop.unmeasured()),  # what the estimate ranks (candidates - measured counted failed ones)
        "rounds": [st.to_dict() for st in result.steps], "campaigns": list(campaigns),
        "settings": {k: (dict(v) if k == "feature_weights" else v) for k, v in vars(s).items()},
    }


_ERROR_KIND = {"cv": "cross-validated", "model": "expected", "blend": "expected/cross-validated"}


def interval_text(low: float, high: float) -> str:
    """``low to high``: with a dash, a negative low bound read as a subtraction ("-0.261-0.877")."""
    return f"{low:.3f} to {high:.3f}"


def progress_line(n_measured: int, est) -> str:
    """The line printed after each round: measurements so far and the estimate (a ``RhoEstimate``)."""
    if est is None:
        return f"{n_measured} measured"
    said = est.to_dict()  # the report's numbers, rounded as it rounds them: an interval to 0.985 read 0.986 there
    return (f"{n_measured} measured, estimated rho {said['rho']:.3f} ({interval_text(said['low'], said['high'])})"
            + (", unsure: measure more" if est.unsure else ""))


def text_lines(report: dict) -> list[str]:
    """A few lines for a terminal."""
    est = report.get("estimated_rho")
    res = report.get("resembles")
    lines = [f"device {report['device']} ({report['space']}, method {report['method']}): {_spent(report)}; "
             f"stopped: {_stopped(report)}"]
    if est:
        left = report.get("unmeasured", report["candidates"] - report["measured"])
        lines.append(f"estimated Spearman rho on the {count(left, 'unmeasured arch', 'unmeasured archs')}: "
                     f"{est['rho']:.3f} ({100 * est['confidence']:.0f} % interval "
                     f"{interval_text(est['low'], est['high'])}); "  # the error is a latency's, not the rho's
                     f"{_ERROR_KIND.get(est.get('source', 'cv'), 'typical')} error of one predicted latency "
                     f"{100 * est['residual_rms']:.1f} %")
        if left < FEW_SCORED:  # as `hwl evaluate` says of a small table: one arch more or less moves it
            more = "random:N, all" if report["space"] == "nb201" else "random:N"  # FBNet has no 'all' (9^22 archs)
            lines.append(f"only {count(left, 'arch is', 'archs are')} left unmeasured: a Spearman rho over so few "
                         f"is a noisy number; more --candidates ({more}) give a steadier one")
        if est.get("extrapolated"):
            lines.append("the model ranks this device worse than any it was calibrated on: the estimate is its own "
                         "(uncalibrated), the interval reaches up to what the calibration would say")
        if est.get("unsure"):
            lines.append("unsure: the interval is wide, the measurements do not pin the rho down (few of them, or a "
                         "noisy device); measure more before relying on the estimate")
        if est.get("whole_ms"):
            calibrated = (" and the estimate is calibrated for it (replay: on FBNet such devices rank worse than "
                          "they look)") if est.get("coarse") else ""
            lines.append("the measurements are whole milliseconds: a timer that coarse hides the device's noise, "
                         "so the interval is wider" + calibrated)
    elif report.get("unmeasured") == 0 or report.get("measured", 0) >= 3:  # rho is estimated on the unmeasured
        # candidates, and none is left: with 2 measured, "need 3" asked for a measurement no candidate can give
        lines.append("estimated rho: none, every candidate is measured (the table gives their measured latencies)")
    else:
        lines.append("estimated rho: not enough measurements (need 3)")
    again, twice = report.get("remeasured_after_drift"), report.get("drifted_twice") or []
    if again:
        lines.append(f"measured again: {count(len(again), 'arch', 'archs')} whose latency was taken while the device "
                     "drifted (canary_drift), more device time; the fit uses "
                     + ("its new latency" if len(again) == 1 else "their new latencies")
                     + (f" ({len(twice)} drifted again: the median of both; a drift canary off on most batches "
                        "is noisier than its tolerance)" if twice else " (none drifted again)"))
    if res and res.get("device") is None:
        lines.append(f"resembles most: cannot be said: {res['why']}")
    elif res and res.get("archs"):
        lines.append(_resembles_line(res))
    elif res and res.get("basis") == "additive fit":
        lines.append(f"resembles most: {res['device']} (Spearman {res['rho']} on the measured archs, against its "
                     f"additive per-layer fit: the train tables do not hold these archs){_tie_text(res)}")
    elif res:
        lines.append(f"resembles most: {res['device']} (Spearman {res['rho']} on the measured archs){_tie_text(res)}")
    return lines


def _tie_text(res: dict) -> str:
    """The train devices as close as the named one on the measured archs, said: a Spearman over so few ties."""
    tied = res.get("tied_with") or []
    if not tied:
        return ""
    shown = ", ".join(tied[:3]) + (f" and {len(tied) - 3} more" if len(tied) > 3 else "")
    return f"; tied with {shown}: too few measured archs to tell them apart"


def _resembles_line(res: dict) -> str:
    """The line of :func:`resembles`' answer: how sure, against what, and the near ties."""
    archs = count(res["archs"], "unmeasured arch", "unmeasured archs")
    sure = (f"ranks closest in {100 * res['share']:.0f} % of the model's draws of {archs}; "
            if res.get("share") is not None else f"on {archs}: ")
    fit = ", against its additive per-layer fit" if res["basis"] == "additive fit" else ""
    also = "".join(f"; also close: {o['device']} ({100 * o['share']:.0f} %)" for o in res.get("also") or [])
    return f"resembles most: {res['device']} ({sure}Spearman {res['rho']:.3f} with the prediction{fit}){also}"


def _stopped(report: dict) -> str:
    """Why the loop stopped, and whether the ``--target-rho`` asked for was reached: 'stopped: budget' alone read
    as a success to a user who had set one."""
    reason, target = report["stop_reason"], report.get("target_rho")
    if target is None:
        return reason
    if reason == "target":
        return f"target (--target-rho {target} reached)"
    more = "; a larger --budget goes on" if reason == "budget" else ""
    return f"{reason}, before --target-rho {target} was reached{more}"


def _spent(report: dict) -> str:
    """``6 of 10 measurements spent (...)``, or plainly that the store already held more than the budget."""
    spent, budget, held = report["measurements_spent"], report["budget"], report["already_in_store"]
    failed = len(report["failed"])
    if spent > budget:  # a rerun with a smaller budget: nothing was measured
        used = f"{'its' if held == 1 else 'all'} {count(held, 'latency is', 'latencies are')} used"
        return (f"nothing measured: the store already holds {spent} of the device's measurements ({failed} of them "
                f"failed), more than the budget of {budget}; {used}")
    return f"{spent} of {budget} measurements spent ({held} already in the store, {failed} failed)"


def write_report(report: dict, path) -> Path:
    from harness.paths import written_whole  # a killed run leaves no half report

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as target:
        target.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


__all__ = ["build_report", "interval_text", "predicted_table", "progress_line", "resembles", "resembles_most",
           "text_lines", "train_latencies", "write_report"]
