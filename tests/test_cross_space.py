"""Cross-space latency transfer through HWL (NB201 <-> FBNet) on the shipped HELP tables."""
import pytest

from harness.errors import UserError
from predictors import data
from predictors.cross_space import hwl_matrix, plot_rho_vs_samples, shared_devices, summarise, transfer_device


@pytest.fixture(scope="module")
def tables():
    nb, fb = data.help_table("nb201"), data.help_table("fbnet")
    # a slice of each space keeps the test quick; every device keeps full columns on it
    return nb[nb["arch"] < 3000].reset_index(drop=True), fb


def test_shared_devices_leave_out_batch_specific_gpus(tables):
    shared = shared_devices(*tables)
    assert len(shared) == 22 and "raspi4" in shared and "1080ti_1" in shared
    assert not any(d.endswith(("_256", "_64")) for d in shared)


def test_hwl_matrix_is_scaled_within_the_space(tables):
    m = hwl_matrix(tables[1], ["raspi4", "gold_6240"])
    assert m.shape == (5000, 2) and m.min().min() == 0.0 and m.max().max() == 1.0


@pytest.mark.slow
def test_transfer_beats_scratch_with_few_samples(tables, tmp_path):
    nb, fb = tables
    results = transfer_device(nb, fb, "raspi4", source_space="nb201", target_space="fbnet", samples=(4, 20),
                              trials=2, epochs=80, transfer_epochs=30)
    by = {(r["method"], r["k"]): r["mean"] for r in results}
    assert by[("hwl_transfer", 4)] > 0.8
    assert by[("hwl_transfer", 4)] > by[("vec_scratch", 4)]
    assert by[("hwl_transfer", 4)] >= by[("hwl_scratch", 4)] - 0.05
    assert all(r["n_references"] == 21 and r["n_pretrain"] == 450 for r in results)
    assert set(summarise(results)["method"]) == {"hwl_transfer", "hwl_scratch", "vec_scratch"}
    path = plot_rho_vs_samples(results, tmp_path / "rho.png")
    assert path.stat().st_size > 1000


def test_one_k_is_taken_as_a_number(tables):
    # as evaluate takes it: "'int' object is not iterable"
    nb, fb = tables
    kwargs = dict(source_space="nb201", target_space="fbnet", trials=1, epochs=2, transfer_epochs=2,
                  methods=("hwl_scratch",))
    one = transfer_device(nb, fb, "raspi4", samples=4, **kwargs)
    assert [(r["k"], r["mean"]) for r in one] == [(r["k"], r["mean"]) for r in transfer_device(nb, fb, "raspi4",
                                                                                                samples=(4,), **kwargs)]


def test_unshared_device_and_large_k_are_refused(tables):
    nb, fb = tables
    with pytest.raises(UserError, match="shared devices: 1080ti_1"):
        transfer_device(nb, fb, "titan_rtx_256", source_space="nb201", target_space="fbnet")
    with pytest.raises(UserError, match="leaves too few"):
        transfer_device(nb, fb, "raspi4", source_space="nb201", target_space="fbnet", samples=(5000,))


@pytest.mark.parametrize("kwargs, match", [
    (dict(samples=(0, 10)), r"every k must be at least 2, got 0, 10"),  # was sklearn's batch_size error
    (dict(samples=(1,)), r"every k must be at least 2, got 1"),  # was a fit on one standardised 0
    (dict(samples=()), r"every k must be at least 2, got none"),  # was an IndexError
    (dict(trials=0), r"trials must be at least 1, got 0"),  # was a mean of nan
])
def test_k_below_2_and_no_trials_are_refused(tables, kwargs, match):
    nb, fb = tables
    with pytest.raises(UserError, match=match):
        transfer_device(nb, fb, "raspi4", source_space="nb201", target_space="fbnet", epochs=5, **kwargs)
