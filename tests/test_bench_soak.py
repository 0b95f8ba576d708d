"""scripts/bench_soak's sampler reads the coordinator's book of model exports (``harness.model_exports``)."""
from harness.campaign import CampaignSpec, plan_campaign
from harness.coordinator import Coordinator, CoordinatorOptions
from harness.store import Store
from tests.bench_scripts import SCRIPTS, load
from tests.campaign_helpers import write_profile


def test_bench_soak_counts_the_coordinators_ready_exports(tmp_path):
    """It summed ``coord.exports.values()``, a dict's until the book moved into ``ModelExports``: the first sample
    of a soak run (after 200 jobs, minutes in) ended it in an AttributeError."""
    soak = load(next(s for s in SCRIPTS if s.name == "bench_soak"))
    store_path, art_dir = tmp_path / "soak.db", tmp_path / "art"
    with Store(store_path) as store:
        cid, _, _ = plan_campaign(store, CampaignSpec(space="nb201", archs="1,2",
                                                      devices=(str(write_profile(tmp_path, "soak-0")),)))
        coord = Coordinator(store, cid, CoordinatorOptions(artifact_dir=art_dir))
        # one export ready, as the coordinator books it once its Ray task is done
        coord.exports.by_key[("nb201", "1", "cifar10", 1)] = {"path": str(art_dir / "a.onnx"), "size_bytes": 1}
        sampler = soak.Sampler(coord, 1, tmp_path, store_path, art_dir)
        sampler.sample(2)
    assert sampler.rows[-1]["jobs"] == 2
    assert sampler.rows[-1]["ready_exports"] == 1
