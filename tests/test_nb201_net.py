"""NB201 torch builder: shapes, class counts, cell semantics."""
import pytest
import torch

from spaces import ArchError, nb201
from spaces.nb201_net import Cell, build_nb201


@pytest.mark.parametrize("dataset,side,n_classes", [("cifar10", 32, 10), ("cifar100", 32, 100),
                                                    ("ImageNet16-120", 16, 120)])
def test_output_shape_per_dataset(dataset, side, n_classes):
    model = build_nb201(6111, dataset).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, n_classes)
    assert model.classifier.out_features == n_classes


def test_default_dataset_is_cifar10_and_string_equals_index():
    torch.manual_seed(0)
    by_index = build_nb201(123)
    torch.manual_seed(0)
    by_string = build_nb201(nb201.to_string(123))
    assert by_index.classifier.out_features == 10
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(by_index.eval()(x), by_string.eval()(x))


def test_cell_sums_incoming_edges():
    # node1 = x, node2 = x + node1, node3 = 0 + node1 + node2 = 3x
    ops = ("skip_connect", "skip_connect", "skip_connect", "none", "skip_connect", "skip_connect")
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(Cell(ops, 4)(x), 3 * x)


def test_disconnected_cell_outputs_zero():
    index = min(nb201.disconnected_indices())
    cell = Cell(nb201.ops_of(index), 8).eval()
    with torch.no_grad():
        assert torch.count_nonzero(cell(torch.randn(1, 8, 6, 6))) == 0


def test_avg_pool_excludes_padding():
    ops = ("none", "none", "none", "avg_pool_3x3", "none", "none")  # node3 = pool(x)
    out = Cell(ops, 1)(torch.ones(1, 1, 4, 4))
    torch.testing.assert_close(out, torch.ones(1, 1, 4, 4))  # corners would be 4/9 with padding counted


def test_bad_arch_and_dataset():
    with pytest.raises(ArchError, match="valid ops"):
        build_nb201("|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ArchError, match="valid datasets"):
        build_nb201(0, "mnist")
