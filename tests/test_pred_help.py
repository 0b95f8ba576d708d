"""HELP baseline: reference archs, reference-first choice, meta-train / adapt / predict."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.base import clone

from predictors import data, protocol
from predictors.base import NotFittedError
from predictors.help import FBNET_REFERENCE_IDS, HELP, NB201_REFERENCES, choose_with_references, reference_archs
from spaces import fbnet

torch.set_num_threads(1)
TINY = dict(hidden=32, n_layers=2, emb_dim=4, meta_episodes=40, query=50)


@pytest.fixture(scope="module")
def nb201_tables():
    return data.by_device(data.help_table("nb201"))


def test_reference_archs_are_helps():
    assert reference_archs("nb201") == NB201_REFERENCES
    keys = reference_archs("fbnet")
    assert len(keys) == 10 and len(set(keys)) == 10
    assert all(fbnet.canonical(k) == k for k in keys)
    # HELP's id 3328 is row 3328 of its FBNet table
    import pandas as pd
    from importlib import resources

    with resources.as_file(resources.files("predictors").joinpath("data/fbnet_latency.parquet")) as f:
        ids = pd.read_parquet(f, columns=["arch_id", "arch_ops"]).drop_duplicates("arch_id").set_index("arch_id")
    assert keys[0] == str(ids.loc[FBNET_REFERENCE_IDS[0], "arch_ops"])


def test_choose_puts_the_references_first_and_they_count_in_k():
    rng = np.random.default_rng(0)
    cands = list(range(15625))
    picked = choose_with_references(NB201_REFERENCES, 20, cands, rng)
    assert picked[:10] == list(NB201_REFERENCES) and len(set(picked)) == 20
    assert choose_with_references(NB201_REFERENCES, 5, cands, rng) == list(NB201_REFERENCES[:5])
    with pytest.raises(ValueError, match="larger than"):
        choose_with_references(NB201_REFERENCES, 20, cands[:10], rng)


def test_help_contract_and_not_fitted_errors():
    method = HELP(**TINY)
    assert not [a for a in vars(method) if a.endswith("_")]
    assert clone(method).get_params() == method.get_params()
    with pytest.raises(NotFittedError, match="pretrain"):
        method.adapt([0], [1.0])
    with pytest.raises(ValueError, match="pretrain"):
        method.choose(10, list(range(100)), np.random.default_rng(0))


def test_help_meta_train_adapt_predict(nb201_tables):
    train = protocol.pretrain_sample({d: nb201_tables[d] for d in ("1080ti_1", "1080ti_32", "silver_4114")}, 200, 0)
    method = HELP(**TINY, random_state=0).pretrain("nb201", train)
    before = {k: v.clone() for k, v in method.net_.state_dict().items()}
    truth = nb201_tables["titan_rtx_256"]
    chosen = method.choose(20, list(truth.index), np.random.default_rng(1))
    adapted = method.adapt(chosen, truth.loc[chosen].to_numpy(), device="titan_rtx_256")
    for k, v in method.net_.state_dict().items():  # the meta-learned initialisation is untouched
        torch.testing.assert_close(v, before[k])
    rest = truth.drop(index=chosen).iloc[:3000]
    assert spearmanr(adapted.predict(list(rest.index)), rest.to_numpy()).statistic > 0.6
    # k < 10: only the first k references are measured; the rest of the embedding is filled in
    few = method.choose(5, list(truth.index), np.random.default_rng(1))
    assert method.adapt(few, truth.loc[few].to_numpy()).predict([0, 1, 2]).shape == (3,)
    with pytest.raises(ValueError, match="reference architecture"):
        method.adapt([0, 1, 2], truth.loc[[0, 1, 2]].to_numpy())
