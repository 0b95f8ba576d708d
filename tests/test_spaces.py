"""Search-space keys against the public HELP tables in ../shared/data."""
import csv
import os
from pathlib import Path

import numpy as np
import pytest

from spaces import ArchError, fbnet, nb201, resolve_archs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _rows(name):
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    with open(path) as f:
        return list(csv.DictReader(f))


def test_nb201_index_matches_official_for_all_15625():
    rows = _rows("nb201_archs.csv")
    assert len(rows) == nb201.N_ARCHS
    for row in rows:
        i = int(row["arch_index"])
        assert nb201.to_string(i) == row["arch_str"]
        assert nb201.to_index(row["arch_str"]) == i


def test_nb201_disconnected_flag_matches_table():
    rows = _rows("nb201_archs.csv")
    expected = {int(r["arch_index"]) for r in rows if r["output_connected"] == "False"}
    assert set(nb201.disconnected_indices()) == expected
    assert len(expected) == 341


def test_fbnet_keys_round_trip_all_5000():
    rows = _rows("fbnet_archs.csv")
    assert len(rows) == 5000
    for row in rows:
        ops = fbnet.parse(row["arch_ops"])
        assert fbnet.to_key(ops) == row["arch_ops"]
        assert fbnet.to_idx_key(ops) == row["op_idx_key"]
        assert fbnet.parse(row["op_idx_key"]) == ops


def test_vec_encodings_are_one_hot():
    v = nb201.vec_encoding([0, 1])
    assert v.shape == (2, 30) and np.all(v.reshape(2, 6, 5).sum(-1) == 1)
    # index 0: avg_pool_3x3 on edge 1<-0
    assert v[0, nb201.OPS.index("avg_pool_3x3")] == 1
    keys = fbnet.sample(3, seed=1)
    f = fbnet.vec_encoding(keys)
    assert f.shape == (3, 22 * 9) and np.all(f.reshape(3, 22, 9).sum(-1) == 1)


def test_fbnet_op_codes_read_every_key_form_alike_and_refuse_a_bad_one():
    """op_codes reads canonical keys by a split (a fast path); op-index keys, spaced keys and a mix take parse's."""
    keys = fbnet.sample(4, seed=2)
    codes = np.array([[fbnet.OPS.index(op) for op in fbnet.parse(k)] for k in keys], dtype=np.uint8)
    index_keys = [fbnet.to_idx_key(fbnet.parse(k)) for k in keys]
    spaced = [k.replace(",", ", ") for k in keys]
    for form in (keys, index_keys, spaced, keys[:2] + index_keys[2:]):
        assert np.array_equal(fbnet.op_codes(form), codes)
        assert np.array_equal(fbnet.op_codes(iter(form)), codes)  # read again where the fast path gives up
    assert fbnet.op_codes([]).shape == (0, fbnet.N_LAYERS)
    with pytest.raises(ArchError, match="layers, got 21"):
        fbnet.op_codes([keys[0], keys[1].rsplit(",", 1)[0]])
    with pytest.raises(ArchError, match="unknown FBNet op 'k9'"):
        fbnet.op_codes([keys[0], "k9," + keys[1].split(",", 1)[1]])


def test_samplers_are_seeded():
    assert nb201.sample(10, 3) == nb201.sample(10, 3)
    assert fbnet.sample(5, 3) == fbnet.sample(5, 3)
    assert fbnet.sample(5, 3) != fbnet.sample(5, 4)


@pytest.mark.parametrize("space", ["nb201", "fbnet"])
def test_a_larger_random_n_keeps_a_smaller_one_s_picks(space):
    """NB201's random:100 and random:200 of one seed drew unrelated sets (rng.choice), so a lab growing a campaign
    from 100 archs to 200 measured 200 new ones instead of 100 more; FBNet's were nested already."""
    for seed in (0, 7):
        fewer, more = (set(resolve_archs(space, f"random:{n}", seed=seed)) for n in (100, 200))
        assert len(fewer) == 100 and len(more) == 200 and fewer <= more
    assert set(resolve_archs(space, "random:5", seed=0)) != set(resolve_archs(space, "random:5", seed=1))


@pytest.mark.parametrize("spec, problem", [
    ("|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB201 op"),
    ("|none~0|+|none~0|none~1|", "needs 3 nodes"),
    ("15625", "out of range"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "incoming edges"),
])
def test_nb201_bad_input_names_problem(spec, problem):
    with pytest.raises(ArchError, match=problem):
        resolve_archs("nb201", spec)


def test_fbnet_bad_input_names_problem():
    ops = fbnet.sample(1, 0)[0].split(",")
    with pytest.raises(ArchError, match="22 layers, got 21"):
        resolve_archs("fbnet", ",".join(ops[:21]))
    with pytest.raises(ArchError, match="unknown FBNet op 'k7_e6'"):
        resolve_archs("fbnet", ",".join(["k7_e6"] + ops[1:]))


def test_selection_forms(tmp_path):
    assert resolve_archs("nb201", "0,17,17") == [0, 17]
    assert len(resolve_archs("nb201", "all")) == 15625
    assert resolve_archs("nb201", "random:5", seed=2) == nb201.sample(5, 2)
    keys = fbnet.sample(2, 0)
    assert resolve_archs("fbnet", ";".join(keys)) == keys
    assert resolve_archs("fbnet", ",".join(keys)) == keys
    assert resolve_archs("fbnet", ",".join(fbnet.to_idx_key(fbnet.parse(k)) for k in keys)) == keys
    f = tmp_path / "archs.txt"
    f.write_text("# comment\n5\n" + nb201.to_string(9) + "\n")
    assert resolve_archs("nb201", f"@{f}") == [5, 9]
    f.write_text("5  # the fastest\n7-8 # a range\n")  # was refused: '5  # the fastest' is neither an index ...
    assert resolve_archs("nb201", f"@{f}") == [5, 7, 8]
    f.write_text(f"{keys[0]}  # a comment\n")
    assert resolve_archs("fbnet", f"@{f}") == keys[:1]
    with pytest.raises(ArchError, match="does not exist"):
        resolve_archs("nb201", "@/nonexistent/file")
    # `--archs @$FILE` with FILE unset said "architecture file . does not exist", a folder that it does not exist
    with pytest.raises(ArchError, match="'@' names no file: give @FILE"):
        resolve_archs("nb201", "@ ")
    with pytest.raises(ArchError, match=f"architecture file {tmp_path} is a folder"):
        resolve_archs("nb201", f"@{tmp_path}")
    read, write = os.pipe()  # --archs @<(command): the shell passes a pipe as /dev/fd/N
    os.write(write, b"7\n8\n")
    os.close(write)
    assert resolve_archs("nb201", f"@/dev/fd/{read}") == [7, 8]
    os.close(read)
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf12\r\n13\r\n")  # Notepad's UTF-8: was ArchError in '\ufeff12'
    assert resolve_archs("nb201", f"@{tmp_path / 'bom.txt'}") == [12, 13]
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ArchError, match="cannot be read as text"):
        resolve_archs("nb201", f"@{tmp_path / 'binary.txt'}")


def test_index_ranges_are_inclusive_and_mix_with_lists(tmp_path):
    """'0-3' was read as an NB201 arch string: "needs 3 nodes separated by '+', got 1 in '0-3'"."""
    assert resolve_archs("nb201", "0-3") == [0, 1, 2, 3]
    assert resolve_archs("nb201", "0-2,20, 30 - 31,1") == [0, 1, 2, 20, 30, 31]
    assert resolve_archs("nb201", ["5-6", "9"]) == [5, 6, 9]  # positional arguments, a campaign.toml list
    assert resolve_archs("nb201", "7-7") == [7]
    assert resolve_archs("nb201", f"15620-{nb201.N_ARCHS - 1}") == list(range(15620, nb201.N_ARCHS))
    (tmp_path / "archs.txt").write_text("0-1\n" + nb201.to_string(9) + "\n")
    assert resolve_archs("nb201", f"@{tmp_path / 'archs.txt'}") == [0, 1, 9]
    with pytest.raises(ArchError, match=r"range '5-2' runs backwards; write 2-5"):
        resolve_archs("nb201", "0,5-2")
    with pytest.raises(ArchError, match=r"range '15620-15625' goes past the last NB201 index: valid indices are "
                                        r"0\.\.15624"):
        resolve_archs("nb201", "15620-15625")
    with pytest.raises(ArchError, match=r"range '0-10': ranges A-B name NB201 indices; FBNet"):
        resolve_archs("fbnet", "0-10")
    with pytest.raises(ArchError, match="out of range"):  # a negative index is not a range
        resolve_archs("nb201", "-5")
    keys = fbnet.sample(2, 0)  # FBNet lists and NB201 arch strings, which hold '-'-free keys, are read as before
    assert resolve_archs("fbnet", ";".join(keys)) == keys
    assert resolve_archs("nb201", nb201.to_string(0)) == [0]


def test_a_selection_of_the_other_space_says_so(tmp_path):
    """An FBNet key given to an NB201 command said only "NB201 arch string needs 3 nodes separated by '+', got 1
    in 'k5_e6'" (its first op), NB201 indices given to FBNet "an FBNet architecture has 22 layers, got 2"."""
    key = fbnet.sample(1, 0)[0]
    with pytest.raises(ArchError, match=r"'k5_e6' is neither an NB201 index .* \(the selection names fbnet "
                                        "architectures, not nb201 "):
        resolve_archs("nb201", key)
    (tmp_path / "archs.txt").write_text("0\n17\n")
    for spec in ("0,17", f"@{tmp_path / 'archs.txt'}", ["0", "17"]):
        with pytest.raises(ArchError, match=r"\(the selection names nb201 architectures, not fbnet ones\)"):
            resolve_archs("fbnet", spec)
    with pytest.raises(ArchError) as bad:  # a typo in either space gets no hint
        resolve_archs("nb201", "0,1x")
    assert "selection names" not in str(bad.value)


def test_a_random_fbnet_selection_past_a_million_is_refused_at_once():
    """random:100000000 (a typo's extra zeros) was drawn: hwl export and campaign run grew past 18 GB within a
    minute. More than a million is refused in one line before anything is drawn."""
    with pytest.raises(ArchError, match=r"cannot sample 100,000,000 FBNet architectures: at most 1,000,000 at once"):
        resolve_archs("fbnet", "random:100000000")
    assert len(resolve_archs("fbnet", "random:3")) == 3
