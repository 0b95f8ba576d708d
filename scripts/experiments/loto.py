#!/usr/bin/env python
"""Leave-one-train-device-out (LOTO) scores of phys_bayes variants: the selection tool.

For every task, each TRAIN device in turn plays the new device and the method pretrains on the
other train devices (the strict protocol's pretraining sample, its k picks and its scoring, via
``predictors.protocol``). No test device is read. Variants are PhysBayes keyword sets below.

``--family`` (leave one family out) also drops the held device's whole family (gpu, cpu,
mobile, ... in the shipped ``devices.csv``) from the pretraining devices: the held device is
then unlike every device the method knows, as the hidden devices of the issue are.

    scripts/experiments/loto.py VARIANT[,VARIANT..] [--tasks N0,F0] [--trials 2] [--ks 10,20] [--first-seed 0] [--family]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from predictors import data, protocol, tasks  # noqa: E402
from predictors.recommended import PhysBayes  # noqa: E402
from scripts.experiments.variants import (AllPhysDesignBayes, ConnectedDesignBayes, LatResidualBayes,  # noqa: E402
                                          LearnedPriorOnlyBayes, LooBayes, NB201AdditiveLatBayes, NoOutputCostBayes,
                                          PhysOpsBayes, PossumBayes, ResponseMixBayes, ShapeVecBayes, StageGroupBayes,
                                          StagePhysBayes, with_conv_design, with_design_prior, with_lat_ridge,
                                          with_learned_design, with_mixed_blocks, with_prior_groups, with_sharp_design,
                                          with_rounding_noise, with_single_device, with_trim)
from scripts._bench_json import output_path, write_json  # noqa: E402

# Variants above ``log`` were scored when the shipped model was the log-latency one (``"response":
# "log"``); with today's defaults they are variations of the ms model.
VARIANTS: dict[str, dict] = {
    "base": {},  # the shipped defaults
    "all5": {"groups": ("lat", "ops", "vec", "cost", "phys")},
    "random_pick": {"design_groups": ()},
    "pool_all": {"pool": None},
    "pool200": {"pool": 200},
    "design_phys": {"design_groups": ("phys",)},
    "design_lat": {"design_groups": ("lat",)},
    "design_ops": {"design_groups": ("phys", "lat", "ops")},
    "design_all": {"design_groups": ("phys", "lat", "ops", "cost")},
    "pool50": {"pool": 50},
    "pool100": {"pool": 100},
    "robust0": {"robust_iters": 0},
    "nu4": {"nu": 4.0},
    "wgrid_fine": {"weight_grid": (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)},
    "ngrid_fine": {"noise_grid": (1e-3, 3e-3, 1e-2, 0.03, 0.1, 0.25, 0.5, 1.0)},
    "ngrid_wide": {"noise_grid": (1e-3, 1e-2, 0.1, 0.3, 1.0)},
    "nolat_nb201": {"groups": ("ops", "vec", "cost", "phys")},
    "nolat_fbnet": {"groups": ("vec", "cost", "phys")},
    "possum": {"cls": PossumBayes},
    "dprior0.1": {"cls": with_design_prior(0.1)},
    "dprior0.3": {"cls": with_design_prior(0.3)},
    "dprior3": {"cls": with_design_prior(3.0)},
    "ngrid_big": {"noise_grid": (1e-3, 1e-2, 0.1, 0.5, 1.0, 2.0)},
    "ngrid_1": {"noise_grid": (1e-3, 1e-2, 0.1, 0.5, 1.0)},
    "sharp0": {"cls": with_sharp_design(0.0)},
    "sharp0.5": {"cls": with_sharp_design(0.5)},
    "sharp1": {"cls": with_sharp_design(1.0)},
    "shapevec": {"cls": ShapeVecBayes},
    "loo": {"cls": LooBayes},
    "trim_m0.1": {"cls": with_trim(0.1)},
    "trim_m0.3": {"cls": with_trim(0.3)},
    "trim_m0.5": {"cls": with_trim(0.5)},
    "trim_n0.1": {"cls": with_trim(0.1, "norm")},
    "trim_n0.3": {"cls": with_trim(0.3, "norm")},
    "trim_minor": {"cls": with_trim(0.3, "minor")},
    "connected": {"cls": ConnectedDesignBayes},
    "isotropic": {"prior_blend": None, "response": "log"},  # the group priors before they were learned
    # the learned priors alone, without the isotropic block for the evidence to prefer
    "learned_only": {"cls": LearnedPriorOnlyBayes},
    "learned_only0": {"cls": LearnedPriorOnlyBayes, "prior_blend": 0.0},
    "learned_only0.05": {"cls": LearnedPriorOnlyBayes, "prior_blend": 0.05},
    "learned_only0.2": {"cls": LearnedPriorOnlyBayes, "prior_blend": 0.2},
    "learned_only0.5": {"cls": LearnedPriorOnlyBayes, "prior_blend": 0.5},
    "learned_only0.8": {"cls": LearnedPriorOnlyBayes, "prior_blend": 0.8},
    "learned_vec": {"cls": with_prior_groups(("vec",)), "prior_blend": 0.2},
    "learned_novec": {"cls": with_prior_groups(("lat", "ops", "cost", "phys")), "prior_blend": 0.2},
    "ldesign0": {"cls": with_learned_design(0.0)},
    "ldesign0.3": {"cls": with_learned_design(0.3)},
    "ldesign0.6": {"cls": with_learned_design(0.6)},
    "ldesign1": {"cls": with_learned_design(1.0)},  # equals base (sanity)
    "log": {"response": "log"},  # log-latency model with log groups (before the ms model)
    "ms_isotropic": {"prior_blend": None},
    "nu1": {"nu": 1.0},
    "robust3": {"robust_iters": 3},
    "response_mix": {"cls": ResponseMixBayes},
    "stagephys": {"cls": StagePhysBayes},
    "stagegroup": {"cls": StageGroupBayes},
    "ngrid_lo": {"noise_grid": (1e-4, 1e-3, 1e-2, 0.1, 0.5)},
    "wgrid_hi": {"weight_grid": (0.0, 0.1, 1.0, 10.0, 100.0)},
    "one_noise": {"relative_noise": False},  # every sample one noise level (before relative noise)
    "conv_live": {"cls": with_conv_design(1)},
    "conv_any": {"cls": with_conv_design(0)},
    "physops": {"cls": PhysOpsBayes},
    "mixed_0_1_10": {"cls": with_mixed_blocks((0.0, 1.0, 10.0))},
    "mixed_0_.3_3": {"cls": with_mixed_blocks((0.0, 0.3, 3.0))},
    "single_dev": {"cls": with_single_device()},
    "no_out": {"cls": NoOutputCostBayes},  # NB201 phys before its out_* columns
    "design_out": {"cls": AllPhysDesignBayes},
    "table_lat": {"additive_lat": False},  # FBNet's lat columns as the tables (before the additive fits)
    "additive_nb201": {"cls": NB201AdditiveLatBayes, "additive_lat": True},
    "lat_ridge0.01": {"cls": with_lat_ridge(1e-2)},
    "lat_res": {"cls": LatResidualBayes},
    "rounding": {"cls": with_rounding_noise()},  # whole-ms timings: + 1/12 ms^2 of rounding noise
    "rounding2": {"cls": with_rounding_noise(2)},
    "tick_floor": {"cls": with_rounding_noise(variance=1.0)},  # ... or a whole 1 ms^2 whatever the latency
}


def loto(task, params: dict, trials: int, ks, first_seed: int = 0, family: bool = False) -> dict:
    """{k: {device: mean rho over trials}} with each train device held out in turn (and its family with ``family``)."""
    train_table, _ = task.tables()
    full = data.by_device(train_table, task.train_devices)
    n_pre = protocol.DEFAULT_N_PRETRAIN[task.space]
    params = dict(params)
    cls = params.pop("cls", PhysBayes)
    out = {k: {} for k in ks}
    for j, held in enumerate(full):
        others = protocol.held_out_pretraining(full, held, task.space, family=family)
        if not others:
            continue
        for k in ks:
            out[k][held] = []
        for seed in range(first_seed, first_seed + trials):
            method = cls(**params, random_state=seed)
            method.pretrain(task.space, protocol.pretrain_sample(others, n_pre, seed))
            for k in ks:
                out[k][held].append(protocol.score_device(method, full[held], k, seed=seed, device_number=j))
    return {k: {d: float(np.mean(v)) for d, v in per.items()} for k, per in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants")
    ap.add_argument("--tasks", default="N0,F0,F1,F2,F3,F4,F5")
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--ks", default="10,20")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--family", action="store_true", help="leave the held device's whole family out")
    ap.add_argument("--json", type=output_path, help="also write the results here (checked before the run)")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    rows = {}
    for name in args.variants.split(","):
        start = time.perf_counter()
        rows[name] = {}
        for t in args.tasks.split(","):
            rows[name][t] = loto(tasks.get_task(t), VARIANTS[name], args.trials, ks, args.first_seed,
                                  args.family)
        line = "  ".join(f"{t}:" + "/".join(f"{np.mean(list(rows[name][t][k].values())):.4f}" for k in ks)
                         for t in rows[name])
        avg = "/".join(f"{np.mean([np.mean(list(rows[name][t][k].values())) for t in rows[name]]):.4f}" for k in ks)
        print(f"{name:14s} {line}  avg {avg}  ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.json:
        write_json(args.json, rows, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
