"""`hwl onboard`'s cache of pretrained methods: hit on the same inputs, missed when any of them changes."""
from __future__ import annotations

import logging

import numpy as np
import torch

from harness.pretrained_cache import cache_key, pretrained
from predictors import data
from predictors.recommended import PhysBayes
from predictors.transfer import TransferLearning

torch.set_num_threads(1)


def _tables(n_devices=3, n_archs=120):
    tables = data.by_device(data.help_table("nb201"))
    return {d: tables[d].sort_index().iloc[:n_archs] for d in sorted(tables)[:n_devices]}


def _method(**changed):
    params = dict(hidden=16, n_layers=2, epochs=2, batch_size=64, random_state=0)
    return TransferLearning(**{**params, **changed})


def _read_from_cache(caplog) -> bool:
    return any("read from" in r.getMessage() for r in caplog.records)


def test_second_pretraining_reads_the_cache_and_predicts_the_same(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="harness.pretrained_cache")
    tables = _tables()
    archs = list(next(iter(tables.values())).index[:30])
    first = pretrained(_method(), "nb201", tables, cache_dir=tmp_path)
    assert not _read_from_cache(caplog) and len(list(tmp_path.glob("*.pt"))) == 1
    again = pretrained(_method(), "nb201", tables, cache_dir=tmp_path)
    assert _read_from_cache(caplog)
    uncached = _method().pretrain("nb201", tables)
    y = tables[sorted(tables)[0]].loc[archs[:10]].to_numpy()
    predictions = [m.adapt(archs[:10], y, device="new").predict(archs) for m in (first, again, uncached)]
    np.testing.assert_array_equal(predictions[1], predictions[0])
    np.testing.assert_array_equal(predictions[2], predictions[0])


def test_any_changed_input_is_another_entry(tmp_path):
    tables = _tables()
    key = cache_key(_method(), "nb201", tables)
    moved = {d: s.copy() for d, s in tables.items()}
    first = sorted(moved)[0]
    moved[first].iloc[0] *= 1.01
    reordered = dict(reversed(list(tables.items())))  # the order sets the embedding rows
    changed = [cache_key(_method(), "nb201", moved), cache_key(_method(), "nb201", reordered),
               cache_key(_method(epochs=3), "nb201", tables), cache_key(_method(ensemble=2), "nb201", tables),
               cache_key(_method(random_state=1), "nb201", tables),
               cache_key(_method(), "nb201", {d: s.iloc[:-1] for d, s in tables.items()})]
    assert key == cache_key(_method(), "nb201", {d: s.copy() for d, s in tables.items()})
    assert None not in changed and len({key, *changed}) == len(changed) + 1
    pretrained(_method(), "nb201", tables, cache_dir=tmp_path)
    pretrained(_method(), "nb201", moved, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_damaged_entry_is_pretrained_again_and_a_fast_method_is_not_cached(tmp_path, caplog):
    tables = _tables()
    path = tmp_path / f"{cache_key(_method(), 'nb201', tables)}.pt"
    path.write_bytes(b"PK\x03\x04 cut short")
    model = pretrained(_method(), "nb201", tables, cache_dir=tmp_path)
    assert "pretraining again" in caplog.text and model.models_
    assert path.stat().st_size > 1000
    assert cache_key(PhysBayes(), "nb201", tables) is None


def test_the_cache_keeps_its_newest_entries_and_no_writer_loses_its_partial_file(tmp_path):
    """The pruning listed `*.pt`, which takes in another onboarding's partial file (`.partial-...-<key>.pt`) while
    it is written: it could be removed under its writer."""
    import os

    from harness.pretrained_cache import KEEP, _prune

    entries = [tmp_path / f"{i:064x}.pt" for i in range(KEEP + 2)]
    for age, path in enumerate(reversed(entries)):  # the first entry the newest
        path.write_bytes(b"x")
        os.utime(path, (1_700_000_000 + age, 1_700_000_000 + age))
    being_written = tmp_path / f".partial-lab-4242-0123abcd-{'f' * 64}.pt"
    being_written.write_bytes(b"half")
    os.utime(being_written, (1_600_000_000, 1_600_000_000))
    _prune(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted([*entries[:KEEP], being_written])
