"""Research helpers (not the product): load HELP tables as matrices, run a strict few-shot loop."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TASKS = {
    "N0": ("nb201", "1080ti_1,1080ti_32,1080ti_256,silver_4114,silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7",
           "titan_rtx_256,gold_6226,fpga,pixel2,raspi4,eyeriss"),
    "F0": ("fbnet", "1080ti_1,1080ti_32,1080ti_64,silver_4114,silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7",
           "fpga,raspi4,eyeriss"),
    "F1": ("fbnet", "2080ti_1,essential_ph_1,silver_4114,titan_rtx_1,titan_rtx_32", "eyeriss,fpga,raspi4,samsung_a50,samsung_s7"),
    "F2": ("fbnet", "essential_ph_1,gold_6226,gold_6240,pixel3,raspi4", "1080ti_1,1080ti_32,2080ti_32,titan_rtx_1,titanxp_1"),
    "F3": ("fbnet", "essential_ph_1,pixel2,pixel3,raspi4,samsung_s7", "1080ti_1,1080ti_32,2080ti_1,titan_rtx_1,titan_rtx_32"),
    "F4": ("fbnet", "1080ti_64,2080ti_1,eyeriss,gold_6226,gold_6240,raspi4,samsung_s7,silver_4210r,titan_rtx_1,titan_rtx_32",
           "1080ti_1,pixel2,essential_ph_1"),
    "F5": ("fbnet", ",".join(f"{g}_{b}" for g in ("1080ti", "2080ti", "titan_rtx", "titanx", "titanxp") for b in (1, 32, 64)),
           "gold_6226,essential_ph_1,samsung_s7,pixel2"),
}
_CACHE = {}


def wide(space):
    """(n_archs, devices) DataFrame of latency_ms, rows = arch row index (NB201 index / HELP FBNet id)."""
    if space not in _CACHE:
        col = "arch_index" if space == "nb201" else "arch_id"
        df = pd.read_parquet(DATA / f"{space}_latency.parquet")
        w = df.pivot(index=col, columns="device", values="latency_ms").sort_index()
        w.columns = [str(c) for c in w.columns]
        _CACHE[space] = w
    return _CACHE[space]


def run(task, make_predict, ks=(10, 20), trials=5, n_pre=None, verbose=False):
    """make_predict(space, train_lat (n, d) with NaN where unmeasured, seed) -> fn(idx, y, choose?) .

    make_predict returns object with .choose(k, rng) (or None) and .fit_predict(idx, y) -> scores all archs.
    """
    space, tr, te = TASKS[task]
    tr, te = tr.split(","), te.split(",")
    W = wide(space)
    n = len(W)
    n_pre = n_pre or (900 if space == "nb201" else 4000)
    out = {k: [] for k in ks}
    t0 = time.time()
    for s in range(trials):
        rng = np.random.default_rng(s)
        pre = np.sort(rng.choice(n, n_pre, replace=False))
        T = np.full((n, len(tr)), np.nan)
        T[pre] = W[tr].values[pre]
        m = make_predict(space, T, tr, s)
        for k in ks:
            per = []
            for j, d in enumerate(te):
                r2 = np.random.default_rng(1000 * s + 17 * j + k)
                idx = m.choose(k, r2) if hasattr(m, "choose") else r2.choice(n, k, replace=False)
                idx = np.asarray(idx)
                y = W[d].values
                p = m.fit_predict(idx, y[idx])
                mask = np.ones(n, bool); mask[idx] = False
                per.append(spearmanr(p[mask], y[mask])[0])
            out[k].append(per)
    res = {k: (np.mean(v), np.std(np.mean(v, axis=1)), np.mean(v, axis=0)) for k, v in out.items()}
    if verbose:
        for k, (mu, sd, per) in res.items():
            print(f"{task} k={k}: {mu:.3f} ± {sd:.3f}  " + " ".join(f"{x:.3f}" for x in per), flush=True)
    return res, time.time() - t0


def tasks_from(text: str) -> list[str]:
    """The tasks of a comma-separated argument (``N0,F1``); an unknown one ends the run in one line naming the
    valid ones, where the first lookup raised KeyError."""
    names = [t.strip().upper() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        sys.exit(f"{Path(sys.argv[0]).name}: unknown task(s) {', '.join(unknown) or repr(text)}; valid: "
                 f"{', '.join(TASKS)}")
    return names
