"""FBNet torch builder: shapes, strides, class counts, blocks."""
import pytest
import torch

from spaces import ArchError, fbnet
from spaces.fbnet_net import ChannelShuffle, InvertedResidual, build_fbnet


@pytest.mark.parametrize("dataset,side,n_classes", [("cifar100", 32, 100), ("imagenet", 224, 1000)])
def test_output_shape_per_dataset(dataset, side, n_classes):
    torch.set_num_threads(1)
    key = fbnet.sample(1, seed=2)[0]
    model = build_fbnet(key, dataset).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, side, side))
    assert out.shape == (1, n_classes)


@pytest.mark.parametrize("dataset,side,final_side", [("cifar100", 32, 4), ("imagenet", 224, 7)])
def test_feature_map_before_head(dataset, side, final_side):
    model = build_fbnet(",".join(["k3_e1"] * 22), dataset).eval()
    with torch.no_grad():
        feats = model.layers(model.stem(torch.randn(1, 3, side, side)))
    assert feats.shape == (1, 352, final_side, final_side)


def test_default_dataset_is_cifar100():
    assert build_fbnet(",".join(["skip"] * 22)).classifier.out_features == 100


def test_skip_is_identity_or_projection():
    model = build_fbnet(",".join(["skip"] * 22), "cifar100")
    kinds = [type(layer).__name__ for layer in model.layers]
    # projections where width or stride changes: first layer of stages 24..352 (16->16 at s1 is identity)
    assert kinds[0] == "Identity" and kinds[1] == "Sequential" and kinds[2] == "Identity"
    assert kinds.count("Sequential") == 6


def test_block_residual_and_groups():
    block = InvertedResidual(16, 16, 1, 5, 1, 2)
    assert block.residual and block.expand[0][0].groups == 2 and block.depthwise[0].groups == 16
    assert not InvertedResidual(16, 24, 1, 3, 6, 1).residual
    assert not InvertedResidual(16, 16, 2, 3, 6, 1).residual


def test_channel_shuffle_interleaves():
    x = torch.arange(4.0).reshape(1, 4, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]


def test_bad_key_and_dataset():
    with pytest.raises(ArchError, match="22 layers"):
        build_fbnet(",".join(["k3_e1"] * 21))
    with pytest.raises(ArchError, match="valid ops"):
        build_fbnet(",".join(["k7_e6"] * 22))
    with pytest.raises(ArchError, match="valid datasets"):
        build_fbnet(",".join(["skip"] * 22), "ImageNet16-120")
