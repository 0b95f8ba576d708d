"""Model files: every method survives save and load, and a file naming other code is refused unrun."""
from __future__ import annotations

import os
import struct
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from harness.cli import main
from harness.model_file import ModelFileError, load_model, save_model
from predictors import data, registry
from predictors.base import TrainTables
from predictors.help import reference_archs


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(train tables of 3 devices x 310 archs, a new device's series) per space."""
    out = {}
    for space in ("nb201", "fbnet"):
        table = data.help_table(space)
        archs = set(sorted(table["arch"].unique())[:300]) | set(reference_archs(space))  # HELP trains on its own
        table = table[table["arch"].isin(archs)]
        devices = sorted(table["device"].unique())
        full = data.by_device(table, devices[:3])
        out[space] = (TrainTables(full, full), data.by_device(table, [devices[-1]])[devices[-1]])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("space", ["nb201", "fbnet"])
@pytest.mark.parametrize("method", registry.method_names())
def test_every_method_predicts_the_same_after_save_and_load(small, tmp_path, space, method):
    train, new = small[space]
    model = registry.get_method(method)
    if method in ("help", "tl_et"):  # few steps: this checks the file, not the fit
        model.set_params(**{k: 20 for k in ("meta_episodes", "epochs", "transfer_epochs")
                            if k in model.get_params()})
    model.pretrain(space, train)
    picked = model.choose(12, list(new.index), np.random.default_rng(0))
    model = model.adapt(picked, new.loc[picked].to_numpy(), device="new")
    path = save_model(tmp_path / "m.pt", model, method=method, space=space, train_devices=list(train), device="new")
    loaded = load_model(path)
    assert (loaded["method"], loaded["space"], loaded["device"]) == (method, space, "new")
    np.testing.assert_array_equal(loaded["model"].predict(list(new.index)), model.predict(list(new.index)))


def test_a_method_saved_with_torch_save_alone_is_refused_naming_save_model(small, tmp_path, capsys):
    # README said a model file is torch.save of the method: such a file was "not an hwl model file (write one with
    # `hwl train`)"; the file save_model writes reads back in Python with load_model
    train, new = small["nb201"]
    model = registry.get_method("hwl_ridge").pretrain("nb201", train).adapt(list(new.index[:8]),
                                                                         new.iloc[:8].to_numpy(), device="new")
    torch.save(model, tmp_path / "bare.pt")
    assert main(["predict", str(tmp_path / "bare.pt"), "--device", "new", "--archs", "0-9",
                 "--out", str(tmp_path / "p.csv")]) == 2
    assert "holds a bare HWLRidge (torch.save of a method), not an hwl model file: write it with " \
           "harness.model_file.save_model(path, model, method=NAME" in capsys.readouterr().err
    save_model(tmp_path / "m.pt", model, method="hwl_ridge", space="nb201", train_devices=list(train), device="new")
    assert main(["predict", str(tmp_path / "m.pt"), "--device", "new", "--archs", "0-9",
                 "--out", str(tmp_path / "p.csv")]) == 0
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "p.csv")["predicted_ms"], model.predict(range(10)))


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_file_that_names_other_code_is_refused_before_it_runs(tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"format": "hwl-fewshot-method", "version": 1, "method": "copy", "space": "nb201",
                "train_devices": [], "device": "x", "model": _RunsACommand(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match=r"names posix\.system, which is not part of an hwl predictor"):
        load_model(tmp_path / "evil.pt")
    assert main(["predict", str(tmp_path / "evil.pt"), "--device", "x", "--archs", "0",
                 "--out", str(tmp_path / "p.csv")]) == 2
    assert "refusing to load it" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("keep", [200, 0.5])
def test_a_truncated_file_is_one_line_that_says_so(tmp_path, keep):
    """A model file cut short was 'not an hwl model file' (one from `hwl train` cut at half its size: '(OSError:
    [Errno 22] Invalid argument)'): nothing said the file was the right kind, only damaged."""
    save_model(tmp_path / "m.pt", registry.get_method("flops"), method="flops", space="nb201", train_devices=[])
    whole = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[:keep if keep > 1 else len(whole) // 2])
    with pytest.raises(ModelFileError, match=r"cut.pt is a torch file cut short or damaged; write it again "
                                             r"\(RuntimeError: PytorchStreamReader failed reading zip archive"):
        load_model(tmp_path / "cut.pt")


def test_help_without_its_reference_archs_names_them(small, tmp_path, capsys):
    train, new = small["nb201"]
    model = registry.get_method("help")
    model.set_params(meta_episodes=5)
    model.pretrain("nb201", train)
    save_model(tmp_path / "help.pt", model, method="help", space="nb201", train_devices=list(train))
    others = [a for a in new.index if a not in set(model.references_)][:12]
    new.loc[others].rename("latency_ms").rename_axis("arch_index").reset_index().assign(device="pi").to_csv(
        tmp_path / "m.csv", index=False)
    assert main(["adapt", str(tmp_path / "help.pt"), "--device", "pi", "--measurements", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "a.pt")]) == 2
    err = capsys.readouterr().err
    assert "method help cannot adapt to pi: HELP needs" in err and str(model.references_[0]) in err


def _adapted_model_file(small, path):
    """An NB201 simple_reference model adapted to device 'new' on 12 archs, saved at ``path``; returns the model."""
    train, new = small["nb201"]
    picked = list(new.index[:12])
    model = registry.get_method("simple_reference").pretrain("nb201", train)
    adapted = model.adapt(picked, new.loc[picked].to_numpy(), device="new")
    save_model(path, adapted, method="simple_reference", space="nb201", train_devices=list(train), device="new")
    return adapted


def test_files_written_on_a_full_disk_leave_the_old_file_whole(small, tmp_path, capsys):
    from tests.small_disk import small_disk

    adapted = _adapted_model_file(small, tmp_path / "a.pt")
    with small_disk(tmp_path / "disk", 2) as disk:
        for name in ("m.pt", "p.csv"):
            (disk / name).write_text("the old file\n")
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(bytes(free - 8 * 1024))  # 8 kB left: less than either file needs
        with pytest.raises(ModelFileError, match=r"cannot write model file .*m.pt .*: is its disk full\?"):
            save_model(disk / "m.pt", adapted, method="simple_reference", space="nb201", train_devices=[])
        assert main(["predict", str(tmp_path / "a.pt"), "--device", "new", "--archs", "all",
                     "--out", str(disk / "p.csv")]) == 1
        assert "error: no space left on the device" in capsys.readouterr().err
        (disk / "filler").unlink()
        assert [(p.name, p.read_text()) for p in sorted(disk.iterdir())] == [("m.pt", "the old file\n"),
                                                                            ("p.csv", "the old file\n")]


def test_files_written_together_on_a_full_disk_are_named_as_the_user_gave_them(small, tmp_path):
    """`hwl onboard` writes its model, table and report together (written_together, each through its own writer): on
    a full disk its error named the model's partial file, `.partial-<host>-<pid>-m.pt`, not the file asked for."""
    from harness.paths import written_together
    from tests.small_disk import small_disk

    adapted = _adapted_model_file(small, tmp_path / "a.pt")
    with small_disk(tmp_path / "disk", 2) as disk:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(bytes(free - 8 * 1024))  # 8 kB left: less than the model needs
        with pytest.raises(ModelFileError) as refused:
            with written_together([disk / "m.pt", disk / "r.json"]) as (model, _):
                save_model(model, adapted, method="simple_reference", space="nb201", train_devices=[])
        assert str(refused.value).startswith(f"cannot write model file {disk / 'm.pt'} ("), refused.value
        (disk / "filler").unlink()
        assert sorted(p.name for p in disk.iterdir()) == []


def test_a_model_file_with_a_flipped_bit_is_refused_not_predicted_from(small, tmp_path, capsys):
    """torch.load does not check the zip's checksums: a model file one bit off on disk or in a copy loaded, and
    predicted other numbers without a word (an adapted phys_bayes model: one architecture 28 ms off)."""
    adapted = _adapted_model_file(small, tmp_path / "a.pt")
    whole = bytearray((tmp_path / "a.pt").read_bytes())
    at = whole.find(b"G" + struct.pack(">d", adapted.y_mean_))  # pickle's BINFLOAT of a number predict uses
    assert at > 0
    whole[at + 4] ^= 0x01  # a bit in the middle of its mantissa: the file still unpickles
    (tmp_path / "flipped.pt").write_bytes(bytes(whole))
    assert main(["predict", str(tmp_path / "flipped.pt"), "--device", "new", "--archs", "all",
                 "--out", str(tmp_path / "p.csv")]) == 2
    assert "flipped.pt is a torch file cut short or damaged; write it again (its data.pkl fails its checksum)" in (
        capsys.readouterr().err)
    assert not (tmp_path / "p.csv").exists()


def test_a_zip_archive_of_something_else_is_not_called_a_damaged_torch_file(tmp_path):
    """A whole zip that torch.save did not write was 'a torch file cut short or damaged; write it again
    (RuntimeError: [enforce fail at inline_container.cc:180] )'."""
    with zipfile.ZipFile(tmp_path / "notes.pt", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(ModelFileError, match=r"notes.pt is not an hwl model file \(a zip archive torch.save did not "
                                             r"write\)$"):
        load_model(tmp_path / "notes.pt")
