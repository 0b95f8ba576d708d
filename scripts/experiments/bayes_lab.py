"""Research lab (not the product): the BMA-of-linear-kernels model phys_bayes grew from, on feature groups.

    scripts/experiments/bayes_lab.py TASK[,TASK..] GROUP+GROUP.. [KS]   e.g. N0 hw+onehot+flops 10,20
"""
import itertools, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import _lab
from spaces import nb201, fbnet
import pandas as pd

STAGES = [1, 4, 4, 4, 4, 4, 1]


def struct_groups(space):
    W = _lab.wide(space)
    if space == "nb201":
        codes = nb201.op_codes(np.arange(len(W))).astype(int)
        oh = np.eye(5)[codes].reshape(len(W), -1)
        # effective ops: edge is live only if on an input->output path of non-none edges
        eff = codes.copy()
        for i in range(len(W)):
            adj, c = nb201.adjacency(i)
            fwd = {0}
            for nd in range(1, 4):
                if any(adj[s, nd] and s in fwd for s in range(nd)): fwd.add(nd)
            bwd = {3}
            for nd in (2, 1, 0):
                if any(adj[nd, t] and t in bwd for t in range(nd + 1, 4)): bwd.add(nd)
            for e, (to, src) in enumerate(nb201.EDGES):
                if not (src in fwd and to in bwd): eff[i, e] = 0
        eoh = np.eye(5)[eff].reshape(len(W), -1)
        from spaces import cost
        f, pa = cost.flops_params("nb201", list(range(len(W))))
        cnt = oh.reshape(-1, 6, 5).sum(1); ec = eoh.reshape(-1, 6, 5).sum(1)
        mac = np.array([0, 0, 1, 9, 0.0])
        P = np.c_[cnt @ mac, ec @ mac, cnt[:, 2] + cnt[:, 3], ec[:, 2] + ec[:, 3], ec[:, 4], ec[:, 1], cnt[:, 4]]
        return {"onehot": oh, "counts": cnt, "eff_onehot": eoh, "flops": np.log(np.c_[f, pa].astype(float)), "logphys": np.log1p(P),
                "eff_counts": eoh.reshape(-1, 6, 5).sum(1)}
    ops = pd.read_parquet(_lab.DATA / "fbnet_latency.parquet", columns=["arch_id", "arch_ops"]).drop_duplicates("arch_id").sort_values("arch_id")
    keys = [str(k) for k in ops["arch_ops"]]
    codes = fbnet.op_codes(keys).astype(int)
    oh = np.eye(9)[codes]  # n,22,9
    st = np.repeat(np.arange(7), STAGES)
    stage = np.stack([oh[:, st == s].sum(1) for s in range(7)], 1).reshape(len(W), -1)
    kern = np.array([3, 3, 3, 3, 5, 5, 5, 5, 0]); exp_ = np.array([1, 1, 3, 6, 1, 1, 3, 6, 0]); grp = np.array([0, 1, 0, 0, 0, 1, 0, 0, 0])
    fact = np.concatenate([(codes == 8), kern[codes] == 5, exp_[codes], grp[codes]], 1).astype(float)
    z = pd.read_csv(_lab.DATA / "fbnet_zcp.csv").sort_values("arch_id")
    fp = np.log(z[["flops", "params"]].values)
    P = phys_group(space)
    return {"onehot": oh.reshape(len(W), -1), "counts": oh.sum(1), "stage": stage, "fact": fact, "flops": fp,
            "phys": P, "logphys": np.log(P + 1)}


def std(X):
    X = np.asarray(X, float)
    s = X.std(0); keep = s > 1e-12
    X = (X[:, keep] - X[:, keep].mean(0)) / s[keep]
    return X / np.sqrt(X.shape[1])


class BMA:
    """Sum of linear kernels over groups; weights/noise averaged over a grid by evidence."""
    def __init__(self, groups, grid=(0.0, 0.1, 1.0, 10.0), noise=(1e-3, 1e-2, 0.1, 0.5), log_y=True):
        self.G = [std(X) for X in groups]
        self.grid, self.noise, self.log_y = grid, noise, log_y
        combos = np.array(list(itertools.product(grid, repeat=len(self.G))))
        combos = combos[combos.sum(1) > 0]
        self.combos = combos

    def fit_predict(self, idx, y):
        y = np.log(y) if self.log_y else np.asarray(y, float)
        mu, sd = y.mean(), y.std() + 1e-12
        t = (y - mu) / sd
        Ks = np.stack([X[idx] @ X[idx].T for X in self.G])  # g,k,k
        k = len(idx)
        C = np.einsum("cg,gij->cij", self.combos, Ks)  # c,k,k
        nc = len(self.combos)
        res = []
        for s2 in self.noise:
            A = C + (s2 + 0) * np.eye(k) + 1.0 * np.ones((k, k))  # bias prior var 1
            L = np.linalg.cholesky(A)
            a = np.linalg.solve(A, np.broadcast_to(t, (nc, k))[..., None])[..., 0]
            logdet = 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)
            ev = -0.5 * (t @ a.T) - 0.5 * logdet
            res.append((ev, a))
        ev = np.concatenate([r[0] for r in res]); a = np.concatenate([r[1] for r in res])
        wts = np.exp(ev - ev.max()); wts /= wts.sum()
        combos = np.tile(self.combos, (len(self.noise), 1))
        pred = np.zeros(self.G[0].shape[0])
        for g, X in enumerate(self.G):
            beta = X[idx].T @ ((wts * combos[:, g]) @ a)
            pred += X @ beta
        pred += (wts @ a).sum()  # bias part (constant, irrelevant for rank)
        self.last_w = wts @ combos
        return pred


def fill_train(T, X):
    """Fill NaN in train latencies (log) by ridge on X fitted per device."""
    from sklearn.linear_model import RidgeCV
    L = np.log(T)
    out = L.copy()
    for j in range(T.shape[1]):
        m = ~np.isnan(L[:, j])
        r = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(X[m], L[m, j])
        out[~m, j] = r.predict(X[~m])
    return out


def dopt(X, k, rng, lam=1.0, pool=None):
    """Greedy sequential D-optimal design on rows of X (prior precision lam)."""
    n, p = X.shape
    cand = np.arange(n) if pool is None else rng.choice(n, min(pool, n), replace=False)
    Xc = X[cand]
    P = np.eye(p) / lam  # posterior covariance
    chosen = []
    for _ in range(k):
        v = np.einsum("ij,jk,ik->i", Xc, P, Xc)
        if chosen: v[chosen] = -np.inf
        i = int(np.argmax(v + 1e-9 * rng.random(len(v))))
        chosen.append(i)
        x = Xc[i]; Px = P @ x
        P = P - np.outer(Px, Px) / (1 + x @ Px)
    return cand[chosen]


class Designed(BMA):
    def __init__(self, groups, design_X, lam=1.0, pool=None, **kw):
        super().__init__(groups, **kw)
        self.D = design_X; self.lam = lam; self.pool = pool

    def choose(self, k, rng):
        return dopt(self.D, k, rng, self.lam, self.pool)


def fbnet_phys_table():
    """Per-(layer, op) physical costs: pw MACs, dw MACs, activation elems, params, kernels, nonskip."""
    from spaces import cost
    plan = cost.fbnet_plan(None)
    layers = plan.layers(32)
    T = np.zeros((22, 9, 6))
    for l, (cin, cout, s, side) in enumerate(layers):
        for o, op in enumerate(fbnet.OPS):
            spec = cost.FBNET_OP_SPECS[op]
            if spec is None:
                if s == 1 and cin == cout:
                    continue
                so = (side - 1) // s + 1
                T[l, o] = [cin * cout * so * so, 0, cin * side * side + cout * so * so, cin * cout, 1, 0]
                continue
            k, e, g = spec
            mid = cin * e
            so = (side + 2 * (k // 2) - k) // s + 1
            pw = cin * mid * side * side // g + mid * cout * so * so // g
            dw = mid * k * k * so * so
            act = cin * side * side + mid * side * side + 2 * mid * so * so + cout * so * so
            T[l, o] = [pw, dw, act, (cin * mid + mid * cout) / g + mid * k * k, 3 + (g > 1) - (e == 1 and False), 1]
    return T


def phys_group(space):
    if space == "fbnet":
        ops = pd.read_parquet(_lab.DATA / "fbnet_latency.parquet", columns=["arch_id", "arch_ops"]).drop_duplicates("arch_id").sort_values("arch_id")
        codes = fbnet.op_codes([str(k) for k in ops["arch_ops"]]).astype(int)
        T = fbnet_phys_table()
        return T[np.arange(22)[None, :], codes].sum(1)
    raise NotImplementedError


class RobustBMA(BMA):
    """BMA with Student-t-like reweighting from leave-one-out residuals of the MAP combo."""
    def __init__(self, groups, iters=2, nu=4.0, **kw):
        super().__init__(groups, **kw); self.iters = iters; self.nu = nu

    def fit_predict(self, idx, y):
        y = np.log(y) if self.log_y else np.asarray(y, float)
        mu, sd = y.mean(), y.std() + 1e-12
        t = (y - mu) / sd
        Ks = np.stack([X[idx] @ X[idx].T for X in self.G])
        k = len(idx)
        C = np.einsum("cg,gij->cij", self.combos, Ks)
        w = np.ones(k)
        for it in range(self.iters + 1):
            evs, als, Ainvs = [], [], []
            for s2 in self.noise:
                A = C + np.diag(s2 / w) + 1.0
                L = np.linalg.cholesky(A)
                Ainv = np.linalg.inv(A)
                a = Ainv @ t
                logdet = 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)
                evs.append(-0.5 * (a @ t) - 0.5 * logdet); als.append(a); Ainvs.append(Ainv)
            ev = np.concatenate(evs); a = np.concatenate(als)
            if it == self.iters:
                break
            best = int(np.argmax(ev)); Ainv = np.concatenate(Ainvs)[best]; ab = a[best]
            dg = np.diag(Ainv)
            z2 = ab ** 2 / dg  # LOO residual^2 / LOO variance
            w = (self.nu + 1) / (self.nu + z2)
        wts = np.exp(ev - ev.max()); wts /= wts.sum()
        combos = np.tile(self.combos, (len(self.noise), 1))
        pred = np.zeros(self.G[0].shape[0])
        for g, X in enumerate(self.G):
            pred += X @ (X[idx].T @ ((wts * combos[:, g]) @ a))
        return pred


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: " + __doc__.strip().splitlines()[-1].strip())
    which = _lab.tasks_from(sys.argv[1])
    cfg = sys.argv[2]
    for task in which:
        space = _lab.TASKS[task][0]
        S = struct_groups(space)
        def mk(space, T, tr, seed):
            if space == "nb201":
                fillX = np.concatenate([S["onehot"], S["eff_onehot"]], 1)
            else:
                fillX = np.concatenate([S["onehot"], S["stage"]], 1)
            Lf = fill_train(T, fillX)
            groups = {"hw": Lf, **S}
            names = cfg.split("+")
            return BMA([groups[n] for n in names])
        res, sec = _lab.run(task, mk, ks=tuple(int(x) for x in (sys.argv[3] if len(sys.argv)>3 else "10,20").split(",")), verbose=True)
        print(task, cfg, f"{sec:.1f}s", flush=True)
