#!/usr/bin/env python
"""Leave-one-train-device-out check of phys_bayes' design decisions (train devices only).

For every task, each train device in turn plays the new device; the other train devices form
the ``lat`` group. Variants add one decision at a time. Usage: lodo_check.py [TASKS] [TRIALS]
"""
import sys
import zlib
from pathlib import Path

import numpy as np
from scipy.stats import norm, rankdata, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _lab  # noqa: E402
import bayes_lab as B  # noqa: E402

BASE = "hw+counts+onehot+flops+logphys"
VARIANTS = {  # name: (groups, robust, design, options)
    "ref_like": ("hw+counts+onehot+flops", False, None, {}),
    "+phys": (BASE, False, None, {}),
    "+robust": (BASE, True, None, {}),
    "+design_raw": (BASE, True, "raw", {}),
    "+design_rankgauss": (BASE, True, "rg", {}),
}
EXTRA = {
    "rg+noise1": (BASE, True, "rg", {"noise": (1e-3, 1e-2, 0.1, 0.5, 1.0)}),
    "rg+stage/eff": (BASE + "+structure", True, "rg", {}),
    "rg+pool200": (BASE, True, "rg", {"pool": 200}),
    "rg+pool2000": (BASE, True, "rg", {"pool": 2000}),
}
if len(sys.argv) > 3 and sys.argv[3] == "extra":
    VARIANTS = {"+design_rankgauss": VARIANTS["+design_rankgauss"], **EXTRA}


def main():
    tasks = _lab.tasks_from(sys.argv[1]) if len(sys.argv) > 1 else list(_lab.TASKS)
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    ks = (5, 10, 20)
    scores = {v: {k: [] for k in ks} for v in VARIANTS}
    for task in tasks:
        space, tr, _ = _lab.TASKS[task]
        tr = tr.split(",")
        W = _lab.wide(space)
        S = B.struct_groups(space)
        n = len(W)
        for d in tr:
            others = [o for o in tr if o != d]
            g = {"hw": np.log(W[others].values), **S, "structure": S.get("stage", S.get("eff_onehot"))}
            Draw = np.concatenate([B.std(g["logphys"]), B.std(g["hw"])], 1)
            Drg = norm.ppf((rankdata(Draw, axis=0) - 0.5) / n)
            Drg /= np.sqrt(Drg.shape[1])
            y = W[d].values
            for name, (cfg, robust, design, opt) in VARIANTS.items():
                groups = [g[x] for x in cfg.split("+")]
                kw = {"noise": opt["noise"]} if "noise" in opt else {}
                m = B.RobustBMA(groups, iters=2, nu=2.0, **kw) if robust else B.BMA(groups, **kw)
                for k in ks:
                    for t in range(trials):
                        rng = np.random.default_rng([t, k, zlib.crc32(d.encode()) % 1000])  # hash() differs per process
                        if design is None:
                            idx = rng.choice(n, k, replace=False)
                        else:
                            idx = B.dopt(Draw if design == "raw" else Drg, k, rng, 1.0, opt.get("pool", 500))
                        p = m.fit_predict(idx, y[idx])
                        mask = np.ones(n, bool)
                        mask[idx] = False
                        scores[name][k].append(spearmanr(p[mask], y[mask])[0])
        print(task, "done", flush=True)
    for name in VARIANTS:
        print(f"{name:20s} " + " ".join(f"k={k}: {np.mean(scores[name][k]):.3f}" for k in ks), flush=True)


if __name__ == "__main__":
    main()
