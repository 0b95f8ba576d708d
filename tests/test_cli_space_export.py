"""CLI contracts of `hwl space` and `hwl export` (through harness.cli.main and capsys)."""
import json

import pytest

from harness.cli import main
from spaces import ArchError, fbnet, nb201

CONTRACT_KEYS = ["space", "arch", "path", "sha256", "export_s", "max_abs_err"]


def test_space_list_nb201_csv(capsys):
    assert main(["space", "list", "nb201", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 15_626 and lines[0] == "arch_index,arch_str"
    assert lines[1] == f"0,{nb201.to_string(0)}"
    assert lines[-1].startswith("15624,|")


def test_space_sample_fbnet(capsys):
    assert main(["space", "sample", "fbnet", "--n", "100", "--seed", "0"]) == 0
    keys = capsys.readouterr().out.splitlines()
    assert len(keys) == 100
    assert all(fbnet.canonical(k) == k for k in keys)
    assert keys == fbnet.sample(100, 0)


def test_what_hwl_space_prints_for_nb201_is_an_arch_file_for_archs(tmp_path, capsys):
    """`hwl space sample nb201 --n 5 > archs.txt` then `hwl predict ... --archs @archs.txt` (or onboard's
    --candidates, zcp's --archs) was refused: "node 1 of '544,|nor_conv_1x1~0|...' must look like |op~0|op~1|"."""
    from spaces import resolve_archs

    assert main(["space", "sample", "nb201", "--n", "5", "--seed", "1"]) == 0
    (tmp_path / "sample.txt").write_text(capsys.readouterr().out)
    assert resolve_archs("nb201", f"@{tmp_path / 'sample.txt'}") == nb201.sample(5, 1)
    assert main(["space", "list", "nb201"]) == 0
    (tmp_path / "list.txt").write_text("\n".join(capsys.readouterr().out.splitlines()[:4]))
    assert resolve_archs("nb201", f"@{tmp_path / 'list.txt'}") == [0, 1, 2]
    (tmp_path / "wrong.txt").write_text(f"3,{nb201.to_string(4)}\n")  # a pair is taken only if both agree
    with pytest.raises(ArchError, match=r"wrong.txt: 1 row\(s\) whose arch_index and arch_str name different cells"):
        resolve_archs("nb201", f"@{tmp_path / 'wrong.txt'}")


def test_export_nb201_index_and_string(tmp_path, capsys):
    arch_str = nb201.to_string(17)
    assert main(["export", "nb201", "0", arch_str, "--out", str(tmp_path), "--workers", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["arch"] for d in lines] == [0, 17]
    for d in lines:
        assert list(d)[:6] == CONTRACT_KEYS
        assert d["space"] == "nb201" and d["dataset"] == "cifar10" and d["max_abs_err"] <= 1e-4
        assert d["path"].endswith(d["sha256"] + ".onnx")


def test_export_fbnet_archs_file_default_cifar100(tmp_path, capsys):
    key = fbnet.sample(1, seed=9)[0]
    arch_file = tmp_path / "archs.txt"
    arch_file.write_text(f"# one key per line\n{fbnet.to_idx_key(fbnet.parse(key))}\n")
    argv = ["export", "fbnet", "--archs", f"@{arch_file}", "--out", str(tmp_path / "store"), "--workers", "1"]
    assert main(argv) == 0
    (first,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first["arch"] == key and first["dataset"] == "cifar100" and not first["cache_hit"]
    assert main(argv) == 0  # again: served from the store
    (again,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert again["cache_hit"] and again["sha256"] == first["sha256"]


@pytest.mark.parametrize("args,needles", [
    (["nb201", "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"], ["conv_5x5", "valid ops", "nor_conv_3x3"]),
    (["nb201", "|none~0|+|none~0|none~1|+|none~0|none~1|"], ["3 incoming edges", "got 2"]),
    (["nb201", "15625"], ["out of range", "0..15624"]),
    (["fbnet", ",".join(["k3_e1"] * 21)], ["22 layers", "got 21"]),
    (["fbnet", ",".join(["k3_e1"] * 21 + ["k7_e2"])], ["k7_e2", "valid ops", "k5_e1_g2"]),
    (["nb201", "0", "--dataset", "imagenet"], ["imagenet", "valid datasets", "ImageNet16-120"]),
    (["fbnet", "--archs", "all"], ["only defined for nb201"]),
    (["nb201"], ["no architectures given", "random:N"]),
    (["nb201", "0", "--archs", "1"], ["either as arguments or with --archs"]),
])
def test_export_bad_input_exits_nonzero_naming_the_problem(tmp_path, capsys, args, needles):
    code = main(["export", *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("hwl export: error:") and "Traceback" not in err
    for needle in needles:
        assert needle in err
    assert not any(tmp_path.glob("*.onnx"))


def test_export_into_an_unwritable_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["export", "nb201", "0", "--out", str(tmp_path / "a-file" / "art")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the artifact folder {tmp_path / 'a-file' / 'art'}" in err and "Traceback" not in err


def test_export_unknown_space_lists_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "darts", "0", "--out", str(tmp_path)])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "invalid choice: 'darts'" in err and "nb201" in err and "fbnet" in err


def test_an_export_line_gives_the_sha256_of_its_file_as_a_measurement_records_it(tmp_path, capsys):
    """The line's only hash, 'sha256', also covers the export config: `sha256sum` of the file and the
    model_sha256 of its measurement both differ from it, so neither could be checked against the export."""
    import hashlib
    argv = ["export", "nb201", "5", "--out", str(tmp_path), "--workers", "1"]
    for _ in range(2):  # exported, then a cache hit
        assert main(argv) == 0
        line = json.loads(capsys.readouterr().out)
        assert line["model_sha256"] == hashlib.sha256(open(line["path"], "rb").read()).hexdigest() != line["sha256"]
    assert line["cache_hit"]
    assert main(["measure", line["path"], "--profile", "quick", "--json", "--policy", "repeats=1"]) == 0
    assert json.loads(capsys.readouterr().out)["measurement"]["spec"]["model_sha256"] == line["model_sha256"]
