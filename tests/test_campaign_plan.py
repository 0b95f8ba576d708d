"""Campaign planning and the CLI's answers to bad input (no Ray needed: all checked first)."""
import contextlib
import dataclasses
import hashlib
import json
import shlex
import socket
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.campaign import (CampaignSpec, campaign_profiles, current_profiles, device_order, load_campaign_file,
                              plan_campaign, refresh_reach, resolve_plan)
from harness.cli import main as hwl_main
from harness.errors import CampaignError, ClusterError
from harness.store import Store
from spaces import resolve_archs
from tests.campaign_helpers import write_profile


def _dump(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_plan_jobs_order_and_idempotence(tmp_path):
    a, b = write_profile(tmp_path, "dev-a"), write_profile(tmp_path, "dev-b")
    spec = CampaignSpec(space="nb201", archs="random:20", seed=3, devices=(str(a), str(b)))
    with Store(tmp_path / "lab.db") as s:
        cid, plan, created = plan_campaign(s, spec)
        assert created and len(plan.archs) == 20
        orders = {d: [arch for _, arch, _ in s.queued_jobs(cid, d)] for d in ("dev-a", "dev-b")}
        # each device gets every arch once, in its own seeded order
        assert sorted(orders["dev-a"]) == sorted(orders["dev-b"]) == sorted(plan.archs)
        assert orders["dev-a"] != orders["dev-b"]
        np.testing.assert_array_equal(device_order(20, 3, "dev-a"), device_order(20, 3, "dev-a"))
        # the same settings name the same campaign: nothing is planned twice
        cid2, plan2, created2 = plan_campaign(s, spec)
        assert (cid2, plan2.name, created2) == (cid, plan.name, False)
        assert s.db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 40
        with pytest.raises(CampaignError, match="already exists .* other settings"):
            plan_campaign(s, CampaignSpec(space="nb201", archs="random:5", seed=3, devices=(str(a),),
                                          name=plan.name))


def test_a_profile_edited_between_runs_says_the_first_campaign_is_left_unfinished(tmp_path, caplog):
    """The same command after a profile edit (a timing setting) plans a new campaign, as it should, but
    said nothing of the first one's queued jobs."""
    dev = write_profile(tmp_path, "dev-a")
    spec = CampaignSpec(space="nb201", archs="5,7", devices=(str(dev),))
    with Store(tmp_path / "lab.db") as s:
        _, first, _ = plan_campaign(s, spec)
        dev.write_text(dev.read_text().replace("window_min_s = 0.03", "window_min_s = 0.05"))
        with caplog.at_level("WARNING", logger="harness.campaign"):
            _, second, created = plan_campaign(s, spec)
            assert created and second.name != first.name
            assert f"campaign {first.name} measures the same architectures on the same devices with other settings " \
                   f"(devices.dev-a.policy.window_min_s differ), so this is a new campaign, {second.name}; its 2 " \
                   f"unmeasured jobs stay queued: `hwl campaign resume --store {tmp_path / 'lab.db'} --name " \
                   f"{first.name}`" in caplog.text
            caplog.clear()
            plan_campaign(s, dataclasses.replace(spec, archs="5,9"))  # other architectures: nothing to say
            assert not caplog.text
            _, one, _ = plan_campaign(s, dataclasses.replace(spec, archs="9"))  # said '1 unmeasured jobs stay'
            dev.write_text(dev.read_text().replace("window_min_s = 0.05", "window_min_s = 0.04"))
            plan_campaign(s, dataclasses.replace(spec, archs="9"))
            assert (f"its 1 unmeasured job stays queued: `hwl campaign resume --store {tmp_path / 'lab.db'} --name "
                    f"{one.name}` finishes it as planned") in caplog.text


def test_the_same_command_with_another_device_list_says_the_first_campaign_is_left_unfinished(tmp_path, caplog):
    """A device added to the command of an unfinished campaign (`--devices a` became `--devices a,b`) planned a new
    campaign that measures every architecture on a again, and said nothing of the first one's queued jobs."""
    a, b = write_profile(tmp_path, "dev-a"), write_profile(tmp_path, "dev-b", cores=(0,))
    spec = CampaignSpec(space="nb201", archs="5,7", devices=(str(a),))
    with Store(tmp_path / "lab.db") as s:
        _, first, _ = plan_campaign(s, spec)
        with caplog.at_level("WARNING", logger="harness.campaign"):
            _, second, created = plan_campaign(s, dataclasses.replace(spec, devices=(str(a), str(b))))
        assert created and second.name != first.name
        assert (f"campaign {first.name} measures the same architectures on dev-a, and this command names other devices "
                f"(+dev-b; a campaign's devices are fixed when it is planned), so this is a new campaign, "
                f"{second.name}, which measures them again on dev-a; its 2 unmeasured jobs stay queued: `hwl campaign "
                f"resume --store {tmp_path / 'lab.db'} --name {first.name}` finishes them as planned") in caplog.text
        caplog.clear()
        other = write_profile(tmp_path, "dev-c")
        with caplog.at_level("WARNING", logger="harness.campaign"):
            plan_campaign(s, dataclasses.replace(spec, devices=(str(other),)))  # no device in common: nothing to say
        assert not caplog.text


def test_the_resume_lines_of_a_store_in_a_folder_with_a_space_paste_as_they_are(tmp_path, capsys, caplog):
    """`hwl campaign status` said "go on with: hwl campaign resume --store .../my lab/lab.db --name X", and so did
    the warning of a campaign left unfinished: a shell splits that at the space. Now they are quoted, and the
    warning carries the flags its command gave (`hwl campaign run` passes those a resume needs too)."""
    dev = write_profile(tmp_path, "dev-a")
    spec = CampaignSpec(space="nb201", archs="5,7", devices=(str(dev),))
    db = tmp_path / "my lab" / "lab.db"
    db.parent.mkdir()
    with Store(db) as s:
        _, first, _ = plan_campaign(s, spec)
        dev.write_text(dev.read_text().replace("window_min_s = 0.03", "window_min_s = 0.05"))
        with caplog.at_level("WARNING", logger="harness.campaign"):
            plan_campaign(s, spec, resume_flags=["--known-hosts", "my hosts"])
    said = caplog.text.split("stay queued: `")[1].split("`")[0]
    assert shlex.split(said) == ["hwl", "campaign", "resume", "--store", str(db), "--name", first.name,
                                 "--known-hosts", "my hosts"], said
    capsys.readouterr()
    assert hwl_main(["campaign", "status", "--store", str(db), "--name", first.name]) == 0
    line = capsys.readouterr().out.split("go on with: ")[1].splitlines()[0]
    assert shlex.split(line) == ["hwl", "campaign", "resume", "--store", str(db), "--name", first.name], line


def _ssh_profile(folder, address, threads=1):
    path = folder / "pi-x.toml"
    path.write_text(f'name = "pi-x"\ndevice_class = "embedded_cpu"\n[host]\nname = "pi-x"\ntransport = "ssh"\n'
                    f'address = "{address}"\nuser = "pi"\nkey = "~/.ssh/lab"\n[runtime]\nkind = "onnxruntime"\n'
                    f'threads = {threads}\ncores = [0, 1]\n')
    return path


def test_a_device_at_a_new_address_stays_in_its_campaign_and_a_new_setup_does_not(tmp_path):
    spec = CampaignSpec(space="nb201", archs="5,7", devices=(str(_ssh_profile(tmp_path, "198.18.0.2")),))
    with Store(tmp_path / "lab.db") as s:
        cid, plan, _ = plan_campaign(s, spec)
        _ssh_profile(tmp_path, "198.18.0.9")  # the Pi came back elsewhere; the user edits its profile
        cid2, plan2, created = plan_campaign(s, spec)  # and runs the same command again
        assert (cid2, plan2.name, created) == (cid, plan.name, False)
        assert [p.host.address for p in campaign_profiles(s, cid)] == ["198.18.0.9"]
        _ssh_profile(tmp_path, "198.18.0.9", threads=2)  # a new measurement setup is a new campaign
        with pytest.raises(CampaignError, match=r"\(devices.pi-x.runtime.threads differ\)"):
            plan_campaign(s, dataclasses.replace(spec, name=plan.name))
        assert refresh_reach(s, cid, current_profiles(s, cid)) == []  # what resume does: keep the campaign's own
        assert campaign_profiles(s, cid)[0].runtime.threads == 1


def test_a_resume_in_another_folder_reaches_a_device_as_its_relative_profile_path_says_today(tmp_path, monkeypatch):
    # `--devices pi-x.toml` stored the source 'pi-x.toml': the resume line `hwl campaign status` prints (the store's
    # absolute path) run in another folder found no such file and kept the stored profile, so the Pi's new address
    # was never taken and the device was quarantined again
    lab, elsewhere = tmp_path / "lab", tmp_path / "elsewhere"
    lab.mkdir()
    elsewhere.mkdir()
    _ssh_profile(lab, "198.18.0.2")
    monkeypatch.chdir(lab)
    with Store(lab / "lab.db") as s:
        cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs="5,7", devices=("pi-x.toml",)))
        _ssh_profile(lab, "198.18.0.9")  # the Pi came back elsewhere; the user edits its profile
        monkeypatch.chdir(elsewhere)
        assert refresh_reach(s, cid, current_profiles(s, cid)) == ["pi-x: host.address 198.18.0.2 -> 198.18.0.9"]
        assert [(p.host.address, p.source) for p in campaign_profiles(s, cid)] == [("198.18.0.9",
                                                                                     str(lab / "pi-x.toml"))]


def _as_older_hwl_wrote(profile, missing_host_keys) -> dict:
    """A profile as an older hwl stored it: whole, without the host keys it did not have yet."""
    d = json.loads(profile.to_json())
    for key in missing_host_keys:
        d["host"].pop(key)
    return d


# () : between 3496038's identity and today's keys; ("recover",): before host.recover (83ab98e, 2026-12-03)
@pytest.mark.parametrize("missing_host_keys", [(), ("recover",)])
def test_the_same_command_finds_a_campaign_an_older_hwl_planned(tmp_path, missing_host_keys):
    """Older stores named a campaign by a hash over whole profiles, addresses and descriptions too, and over the
    profile keys of their day: the same command after an upgrade must find it, not plan it again."""
    spec = CampaignSpec(space="nb201", archs="5,7", devices=(str(_ssh_profile(tmp_path, "198.18.0.2")),))
    plan = resolve_plan(spec)
    stored = {p.name: _as_older_hwl_wrote(p, missing_host_keys) for p in plan.profiles}
    old_config = {**plan.config, "devices": {name: {k: v for k, v in d.items() if k != "source"}
                                             for name, d in stored.items()}}
    old_name = "c-" + hashlib.sha256(json.dumps(old_config, sort_keys=True).encode()).hexdigest()[:10]
    with Store(tmp_path / "lab.db") as s:
        cid = s.create_campaign(name=old_name, space="nb201", measurement=None, arch_spec="5,7", seed=0,
                                order_seed=0, config=old_config, devices={"pi-x": json.dumps(stored["pi-x"])},
                                jobs=[("pi-x", "5", 0), ("pi-x", "7", 1)])
        assert plan_campaign(s, spec)[0::2] == (cid, False) and plan_campaign(s, spec)[1].name == old_name
        assert s.campaign_names() == [old_name]
        _ssh_profile(tmp_path, "198.18.0.2", threads=2)  # other settings are still another campaign
        assert plan_campaign(s, spec)[0::2] == (cid + 1, True)


@pytest.mark.parametrize("name", ["lab", None])
def test_the_same_random_command_goes_on_with_the_archs_an_older_hwl_drew(tmp_path, name):
    """NB201's random:N is nested now (the first N of a seeded permutation); an older hwl drew it with
    rng.choice, other archs for the same N and seed. Its campaign, run again by the same command after an
    upgrade, must go on measuring the archs it planned and stored: not be refused ('archs_sha256 differ') when
    named, nor planned again over today's draws when not. Another N is still another campaign."""
    dev = write_profile(tmp_path, "dev-a")
    spec = CampaignSpec(space="nb201", archs="random:5", seed=0, devices=(str(dev),), name=name)
    plan = resolve_plan(spec)
    drawn = [str(i) for i in sorted(np.random.default_rng(0).choice(15625, size=5, replace=False))]
    assert set(drawn) != set(plan.archs)  # what hwl before December 2026 drew
    old_config = {**plan.config, "archs_sha256": hashlib.sha256("\n".join(drawn).encode()).hexdigest()}
    old_name = name or "c-" + hashlib.sha256(json.dumps(old_config, sort_keys=True).encode()).hexdigest()[:10]
    with Store(tmp_path / "lab.db") as s:
        cid = s.create_campaign(name=old_name, space="nb201", measurement=None, arch_spec="random:5", seed=0,
                                order_seed=0, config=old_config, devices={"dev-a": plan.profiles[0].to_json()},
                                jobs=[("dev-a", arch, i) for i, arch in enumerate(drawn)])
        again, planned, created = plan_campaign(s, spec)
        assert (again, planned.name, created) == (cid, old_name, False)
        assert s.campaign_names() == [old_name]
        assert sorted(arch for _, arch, _ in s.queued_jobs(cid, "dev-a")) == sorted(drawn)
        if name is None:
            assert plan_campaign(s, dataclasses.replace(spec, archs="random:6"))[2]  # other settings: planned


def test_campaign_file(tmp_path):
    write_profile(tmp_path, "dev-a")
    (tmp_path / "archs.txt").write_text("5\n# a comment\n|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
                                        "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|\n")
    f = tmp_path / "c.toml"
    f.write_text('name = "night"\nspace = "nb201"\narchs = "@archs.txt"\ndevices = ["dev-a.toml"]\n'
                 'profile = "quick"\n')
    settings = load_campaign_file(f)
    spec = CampaignSpec(space=settings["space"], archs=settings["archs"], devices=tuple(settings["devices"]),
                        measurement=settings["profile"], name=settings["name"])
    with Store(tmp_path / "lab.db") as s:
        cid, plan, _ = plan_campaign(s, spec)
        assert plan.name == "night" and len(plan.archs) == 2 and "5" in plan.archs
    (tmp_path / "bad.toml").write_text('space = "nb201"\ncolour = "red"\n')
    with pytest.raises(CampaignError, match="unknown key 'colour'"):
        load_campaign_file(tmp_path / "bad.toml")
    # a byte-order mark (Windows' Notepad) was 'not valid TOML: Invalid statement (at line 1, column 1)'
    (tmp_path / "bom.toml").write_bytes(b'\xef\xbb\xbf' + f.read_bytes())
    assert load_campaign_file(tmp_path / "bom.toml") == settings


@pytest.mark.parametrize("line, key, said", [
    ('devices = ["dev-b"]', "devices", "unknown device 'dev-b'"),
    ('devices = ["dev-b.toml"]', "devices", "device profile file"),
    ('profile = "quik"', "profile", "unknown measurement profile 'quik'; valid: quick, standard"),
    ('space = "nb202"', "space", "unknown search space 'nb202'"),
    ('archs = "@archs.txt"', "archs", "architecture file"),
    ('archs = "1,99999"', "archs", "NB201 index 99999 is out of range"),
])
def test_a_campaign_files_bad_value_is_named_with_the_file_and_the_key(tmp_path, capsys, line, key, said):
    # 'unknown measurement profile ...', 'unknown device ...' named neither the campaign file nor its key, and the
    # same words come from a mistake in a flag
    write_profile(tmp_path, "dev-a")
    settings = {"space": 'space = "nb201"', "archs": 'archs = "1,2"', "devices": 'devices = ["dev-a.toml"]',
                "profile": 'profile = "quick"'}
    settings[key] = line
    night = tmp_path / "night.toml"
    night.write_text("\n".join(settings.values()) + "\n")
    assert hwl_main(["campaign", "run", str(night), "--store", str(tmp_path / "lab.db"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hwl campaign: error: {night}: key '{key}': ") and said in err and err.count("\n") == 1, err
    assert not (tmp_path / "lab.db").exists()
    # the flag that replaces the file's value is all that counts
    if key in ("devices", "profile"):
        flag = {"devices": ["--devices", str(tmp_path / "dev-a.toml")], "profile": ["--profile", "quick"]}[key]
        plan = ["campaign", "run", str(night), *flag, "--store", str(tmp_path / "lab.db"), "--name", "n", "--address",
                "ray://nowhere"]
        assert hwl_main(plan) == 2
        assert "cannot join the Ray cluster at 'ray://nowhere'" in capsys.readouterr().err  # planned past the file


def test_selections_and_campaign_files_read_a_tilde_as_the_home_folder(tmp_path, monkeypatch):
    """'--archs @~/archs.txt' (no shell expands a tilde after '@') said 'architecture file ~/archs.txt does not
    exist', and a campaign file's '@~/archs.txt' or '~/pi.toml' was read inside the file's folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (home / "archs.txt").write_text("5\n9\n")
    assert resolve_archs("nb201", "@~/archs.txt") == [5, 9]
    write_profile(home, "dev-a")
    (tmp_path / "c.toml").write_text('space = "nb201"\narchs = "@~/archs.txt"\ndevices = ["~/dev-a.toml"]\n')
    settings = load_campaign_file(tmp_path / "c.toml")
    assert (settings["archs"], settings["devices"]) == (f"@{home / 'archs.txt'}", [str(home / "dev-a.toml")])


def test_bad_input_gives_clear_errors_and_changes_nothing(tmp_path, capsys):
    good = write_profile(tmp_path, "dev-a")
    db = tmp_path / "lab.db"
    with Store(db) as s:
        plan_campaign(s, CampaignSpec(space="nb201", archs="1,2", devices=(str(good),)))
    before = _dump(db)
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "broken"\ndevice_class = "cpu"\n[runtime]\nkind = "tensorrt"\n')
    notastore = tmp_path / "notes.db"
    notastore.write_text("my notes\n" * 100)
    base = ["campaign", "run", "--space", "nb201", "--no-progress"]
    cases = [
        (base + ["--archs", "1,2", "--devices", "no-such-device", "--store", str(db)],
         ["unknown device 'no-such-device'", "known devices", "local-ort-1t"]),
        (base + ["--archs", "1,2", "--devices", str(broken), "--store", str(db)],
         ["broken.toml", "runtime.kind", "tensorrt", "onnxruntime, tvm, torch, command"]),
        (base + ["--archs", "1,99999", "--devices", str(good), "--store", str(db)],
         ["99999", "out of range", "0..15624"]),
        (base + ["--archs", "|nor_conv_9x9~0|+|x~0|y~1|+|a~0|b~1|c~2|", "--devices", str(good),
                 "--store", str(db)], ["nor_conv_9x9", "valid ops"]),
        (base + ["--archs", "1", "--devices", str(good), "--store", str(notastore)], ["not an hwl store"]),
        (["campaign", "status", "--store", str(notastore)], ["not an hwl store"]),
        (["campaign", "status", "--store", str(db), "--name", "nope"], ["no campaign 'nope'", "campaigns: c-"]),
        (["campaign", "resume", "--store", str(tmp_path / "missing.db")], ["does not exist"]),
        (base + ["--archs", "1", "--store", str(db)], ["missing --devices"]),
        # unwritable places (a path through a file): refused before anything is measured or charged, naming the
        # file in the way (it said "(File exists)" / ": File exists", of a folder the user never named)
        (base + ["--archs", "1", "--devices", str(good), "--store", str(broken / "lab.db")],
         ["cannot open store", "for writing", f"({broken} is a file, not a folder)"]),
        (base + ["--archs", "1,2", "--devices", str(good), "--store", str(db), "--artifacts", str(broken / "art")],
         [f"cannot write the artifact folder {broken / 'art'}: {broken} is a file, not a folder"]),
        # refused too before a new store is made: an empty store file was left behind
        (base + ["--archs", "1", "--devices", str(good), "--store", str(tmp_path / "new.db"), "--artifacts",
                 str(broken)], [f"cannot write the artifact folder {broken}: {broken} is a file, not a folder"]),
        # planned, then printed in the resume line and the status table as what no one can type back
        *[(base + ["--archs", "1", "--devices", str(good), "--store", str(db), "--name", name],
           [f"campaign name {name!r}: give a name without spaces at its ends and without control characters"])
          for name in (" ", "lab\nrun", "pi run ")],
    ]
    for argv, words in cases:
        assert hwl_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err  # one line, no traceback
        for word in words:
            assert word in err, (word, err)
    assert _dump(db) == before
    assert notastore.read_text() == "my notes\n" * 100
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("new.db")]


def test_status_and_export_on_a_planned_campaign(tmp_path, capsys):
    good = write_profile(tmp_path, "dev-a")
    db = tmp_path / "lab.db"
    with Store(db) as s:
        plan_campaign(s, CampaignSpec(space="nb201", archs="1,2,3", devices=(str(good),), name="p"))
    assert hwl_main(["campaign", "status", "--store", str(db), "--json"]) == 0
    assert '"queued": 3' in capsys.readouterr().out
    assert hwl_main(["campaign", "export", "--store", str(db), "--out", str(tmp_path / "x.parquet")]) == 2
    # the error named no campaign, though a store holds many and the command may have taken the latest unasked
    assert f"campaign p has no results yet in {db}" in capsys.readouterr().err
    assert hwl_main(["campaign", "export", "--store", str(db), "--out", str(tmp_path / "x.csv")]) == 2
    assert f"campaign p has no accepted results yet in {db}" in capsys.readouterr().err


def test_a_resumed_campaigns_table_counts_the_jobs_earlier_runs_did():
    """After a resume the table said 'done 4' for a 30-job campaign with nothing queued: it counted this run's
    jobs only (the JSON's done_now). It counts the campaign's now."""
    from rich.console import Console

    from harness.report import progress_table

    snapshot = {"pi-1": {"done": 4, "failed": 1, "done_before": 25, "failed_before": 0, "running": 0, "queued": 0,
                         "state": "active", "error": None, "eta_s": None}}
    console = Console(width=120, record=True)
    console.print(progress_table(snapshot))
    row = next(line for line in console.export_text().splitlines() if "pi-1" in line)
    assert [cell.strip() for cell in row.split("│")[3:5]] == ["29", "1"], row  # done, failed


def test_a_runs_duration_is_not_moved_by_a_step_of_the_wall_clock(tmp_path, monkeypatch):
    """A month-long campaign's wall clock may be stepped (NTP, a clock set by hand): the run's duration
    (`wall_s`, its summary's and the command's JSON line) was the difference of two wall-clock times, so a step
    back of an hour made it negative. Durations are taken on the monotonic clock; stored times stay wall clock."""
    import time

    from harness.coordinator import Coordinator, CoordinatorOptions

    dev = write_profile(tmp_path, "dev-a")
    with Store(tmp_path / "lab.db") as s:
        cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs="1835", devices=(str(dev),)))
        with s.transaction():
            s.db.execute("UPDATE jobs SET state = 'done'")  # nothing left to measure: the run starts no Ray
        coordinator = Coordinator(s, cid, CoordinatorOptions(artifact_dir=tmp_path / "art", canary_every=0))
        stepped_back = time.time() - 3600
        monkeypatch.setattr(time, "time", lambda: stepped_back)
        summary = coordinator.run()
    assert summary["wall_s"] >= 0, summary


def test_the_progress_tables_eta_gives_its_units():
    """The ETA column read '1:15' and '1:02:05': minutes or hours, the reader had to guess. Now its units say."""
    from rich.console import Console

    from harness.report import progress_table

    snapshot = {name: {"done": 1, "failed": 0, "running": 1, "queued": 9, "state": "active", "error": None,
                       "eta_s": eta_s} for name, eta_s in (("pi-1", 3725.4), ("pi-2", 75), ("pi-3", 9))}
    console = Console(width=120, record=True)
    console.print(progress_table(snapshot))
    etas = {line.split("│")[1].strip(): line.split("│")[7].strip() for line in console.export_text().splitlines()
            if "pi-" in line}
    assert etas == {"pi-1": "1h02m", "pi-2": "1m15s", "pi-3": "9s"}, etas


@pytest.mark.parametrize("command", ["campaign status", "status"])
def test_status_at_80_columns_names_each_device_whole_and_gives_its_error_in_full(tmp_path, capsys, monkeypatch,
                                                                                  command):
    """Piped or logged (80 columns), `hwl campaign status` cut the device column to 'lab-pi4-…' for both
    devices, and an error to a few letters a line, stopped at 80 characters before it said what to do;
    `hwl status` cut every name to 'local…' and 'lab-p…'. Now names and states are whole and each error is
    one full line under the table."""
    a, b = write_profile(tmp_path, "lab-pi4-ort-1t"), write_profile(tmp_path, "lab-pi4-ort-2t")
    db = tmp_path / "lab.db"
    error = "3 failed attempts in a row (runtime_error: the tool exited 1); fix the device and resume"
    with Store(db) as s:
        cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs="1,2", devices=(str(a), str(b))))
        s.set_device_state(cid, "lab-pi4-ort-2t", "quarantined", error=error)
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    devices = [str(a), str(b)] if command == "status" else []
    assert hwl_main([*command.split(), *devices, "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert "lab-pi4-ort-1t" in out and "quarantined" in out, out
    assert f"lab-pi4-ort-2t: {error}\n" in out, out


def _header(table: str) -> list[str]:
    return [cell.strip() for cell in next(r for r in table.splitlines() if r.startswith("┃")).split("┃")[1:-1]]


def test_every_status_header_is_whole_at_80_columns(capsys, monkeypatch):
    """At 80 columns `hwl status` of this machine's devices cut its 8 headers to 'trans…', 'runt…', 'selft…' and
    'self…' (the self-test and its ms both), and 'onnxruntime' to 'onnx…'. Now the table goes without the transport
    and agent columns there, says so and where they are; a wide terminal shows all of them."""
    local = sorted(str(p) for p in (Path(__file__).parents[1] / "device_profiles").glob("*.toml"))
    assert len(local) == 4  # this machine's four devices
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    assert hwl_main(["status", *local]) == 0
    out = capsys.readouterr().out
    assert _header(out) == ["device", "runtime", "reachable", "self-test", "state"], out
    assert "local-ort-1t" in out and "onnxruntime" in out and "…" not in out, out
    assert "(transport and agent left out to fit 80 columns; --json gives them)\n" in out
    monkeypatch.setenv("COLUMNS", "200")
    assert hwl_main(["status", *local]) == 0
    out = capsys.readouterr().out
    assert _header(out) == ["device", "transport", "runtime", "reachable", "agent", "self-test", "state"], out
    assert "left out" not in out


def test_a_cluster_nothing_answers_at_is_refused_before_a_campaign_is_planned(tmp_path, capsys):
    """`hwl campaign run --address <unreachable>` planned the campaign into the store, then failed to join:
    the store kept a campaign nobody asked to keep (and a new store file). Now the address is tried first."""
    from tests.sshd import free_port

    good = write_profile(tmp_path, "dev-a")
    db, fresh = tmp_path / "lab.db", tmp_path / "fresh.db"
    with Store(db) as s:
        plan_campaign(s, CampaignSpec(space="nb201", archs="1,2", devices=(str(good),), name="earlier"))
    before = _dump(db)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    for store in (db, fresh):
        assert hwl_main(["campaign", "run", "--space", "nb201", "--archs", "3,4", "--devices", str(good), "--store",
                         str(store), "--address", address, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot join the Ray cluster at '{address}': nothing answers there" in err
    assert _dump(db) == before and not fresh.exists()


def test_ray_address_in_the_environment_is_joined_as_address_is(tmp_path, capsys, monkeypatch):
    """RAY_ADDRESS (which the README names beside --address) without --address went to a local ray.init, and Ray
    stopped it with a traceback ('ValueError: When connecting to an existing cluster, num_cpus and num_gpus must
    not be provided') after the store was made and the campaign planned. It is the address now, checked first."""
    from tests.sshd import free_port

    good = write_profile(tmp_path, "dev-a")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", address)
    for argv in (["campaign", "run", "--space", "nb201", "--archs", "3", "--devices", str(good), "--no-progress"],
                 ["onboard", str(good), "--space", "nb201", "--budget", "2", "--out", str(tmp_path / "p.pt")]):
        assert hwl_main([*argv, "--store", str(tmp_path / "lab.db")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot join the Ray cluster at '{address}': nothing answers there" in err
        assert err.endswith("or leave out --address and unset RAY_ADDRESS to run a local Ray\n"), err
    assert not (tmp_path / "lab.db").exists()


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"], ids=["closes", "http1"])
def test_an_address_that_accepts_connections_but_is_no_ray_is_refused_at_once(tmp_path, capsys, answer):
    """A port of another server (a web server, sshd, a typo): Ray waited for its GCS for ever, with Ctrl-C held
    while it did, and the command never ended. It is now refused in one line, with no store made."""
    import threading

    from harness.ray_cluster import check_reachable

    server = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(ClusterError, match="something accepts connections there but does not answer as a Ray "
                                                "head does"):
            check_reachable(address)
        good = write_profile(tmp_path, "dev-a")
        assert hwl_main(["campaign", "run", "--space", "nb201", "--archs", "3", "--devices", str(good), "--store",
                         str(tmp_path / "lab.db"), "--address", address, "--no-progress"]) == 2
        assert f"cannot join the Ray cluster at '{address}': something accepts" in capsys.readouterr().err
        assert not (tmp_path / "lab.db").exists()
    finally:
        server.close()


@contextlib.contextmanager
def _answering_as_grpc(server):
    """``server``'s port, served meanwhile as a gRPC server answers: an HTTP/2 SETTINGS frame to each connection."""
    import threading

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(64)
                    conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_a_ray_client_address_is_checked_at_its_host_and_port(tmp_path):
    """`--address ray://HOST:PORT` (a Ray Client server) was refused as 'nothing answers there (Name or service not
    known)': the scheme was taken for part of the host name. Its host and port are checked now."""
    from harness.ray_cluster import check_reachable

    with _answering_as_grpc(socket.create_server(("127.0.0.1", 0))) as port:
        check_reachable(f"ray://127.0.0.1:{port}")
    from tests.sshd import free_port

    with pytest.raises(ClusterError, match=r"nothing answers there \(\[Errno 111\]"):  # refused, not a bad name
        check_reachable(f"ray://127.0.0.1:{free_port()}")


def test_an_ipv6_address_is_checked_at_its_host_in_brackets(tmp_path, capsys):
    """`--address [::1]:PORT` and `ray://[::1]:PORT` were refused as 'nothing answers there (Name or service not
    known)': the brackets were taken for part of the host name. A refused one is the one line an IPv4 address gets,
    and one where a gRPC server answers passes the check."""
    from harness.ray_cluster import check_reachable

    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with _answering_as_grpc(server) as port:
        for scheme in ("", "ray://"):
            check_reachable(f"{scheme}[::1]:{port}")
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    for address in (f"[::1]:{port}", f"ray://[::1]:{port}"):
        assert hwl_main(["campaign", "run", "--space", "nb201", "--archs", "3", "--devices",
                         str(write_profile(tmp_path, "dev-a")), "--store", str(tmp_path / "lab.db"), "--address",
                         address, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot join the Ray cluster at '{address}': nothing answers there " \
            "([Errno 111] Connection refused)" in err, err
        assert not (tmp_path / "lab.db").exists()


def test_a_ray_client_address_that_nothing_answers_names_the_client_server_port_to_start(tmp_path, capsys):
    """`--address ray://HOST:10001` with nothing there said "Start it with `ray start --head --port PORT`", which
    starts the head's GCS on that port, not the Ray Client server a ray:// address joins; it names
    --ray-client-server-port now (a HOST:PORT address still names --port), in one line, with no store made."""
    from tests.sshd import free_port

    port = free_port()
    good = write_profile(tmp_path, "dev-a")
    for address, start in ((f"ray://127.0.0.1:{port}", "`ray start --head --ray-client-server-port PORT`"),
                           (f"127.0.0.1:{port}", "`ray start --head --port PORT`")):
        assert hwl_main(["campaign", "run", "--space", "nb201", "--archs", "3", "--devices", str(good), "--store",
                         str(tmp_path / "lab.db"), "--address", address, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "nothing answers there" in err and f"Start it with {start}" in err, err
        assert not (tmp_path / "lab.db").exists()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, answers nothing: no gRPC server
    try:
        from harness.ray_cluster import check_reachable

        with pytest.raises(ClusterError, match="--ray-client-server-port PORT"):
            check_reachable(f"ray://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
    finally:
        silent.close()


@pytest.mark.parametrize("address, start", [("ray://127.0.0.1", "--ray-client-server-port PORT"),
                                            ("127.0.0.1", "--port PORT")])
def test_an_address_without_a_port_is_one_line_at_once(tmp_path, capsys, address, start):
    """`--address ray://HOST` waited out Ray Client's 30 s of retries ('ray client connection timeout', told to
    start a head), and `--address HOST` ended in a traceback of Ray's ValueError ('Invalid address format')."""
    import time

    started = time.monotonic()
    assert hwl_main(["campaign", "run", "--space", "nb201", "--archs", "3", "--devices",
                     str(write_profile(tmp_path, "dev-a")), "--store", str(tmp_path / "lab.db"), "--address", address,
                     "--no-progress"]) == 2
    assert time.monotonic() - started < 10
    assert capsys.readouterr().err == f"hwl campaign: error: cannot join the Ray cluster at {address!r}: it names no " \
        f"port; give the one the head serves, as `ray start --head {start}` (" \
        f"{10001 if address.startswith('ray://') else 6379} unless it says otherwise) starts it, or leave out " \
        "--address to run a local Ray\n"
    assert not (tmp_path / "lab.db").exists()


@pytest.mark.parametrize("command", ["campaign", "onboard"])
def test_a_ray_client_address_without_grpcio_is_one_line_naming_the_package(tmp_path, capsys, monkeypatch, command):
    """Ray Client needs grpcio (`ray[client]`), which a plain `pip install ray` leaves out: `--address ray://...`
    ended in a traceback of Ray's ValueError. Now it is one line naming the package, with nothing written."""
    from tests.sshd import free_port

    monkeypatch.setitem(sys.modules, "grpc", None)  # `import grpc` fails here as where grpcio is not installed
    profile, db = write_profile(tmp_path, "dev-a"), tmp_path / "lab.db"
    address = f"ray://127.0.0.1:{free_port()}"
    out = str(tmp_path / "p.pt")
    args = (["campaign", "run", "--space", "nb201", "--archs", "3", "--devices", str(profile), "--no-progress"]
            if command == "campaign" else ["onboard", str(profile), "--space", "nb201", "--out", out])
    assert hwl_main([*args, "--store", str(db), "--address", address]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot join the Ray cluster at '{address}': Ray Client (ray://) needs the " \
        "grpcio package, which is not installed here: `pip install 'hwl[client]'`" in err, err
    assert not db.exists() and not (tmp_path / "lab-artifacts").exists()


def test_a_device_named_like_an_imported_table_is_refused_before_anything_is_planned(tmp_path, capsys):
    """`hwl data import` refuses a table naming a device a campaign measures; the other way round, a campaign
    measuring a device under a name the store holds as an imported table (HELP's pixel3, say) was planned and
    run, and only the predictor commands refused the store afterwards. Now it is refused first, in one line."""
    table = tmp_path / "theirs.csv"
    table.write_text("arch_index,device,latency_ms\n0,pixel-x,5.0\n1,pixel-x,6.0\n")
    db = tmp_path / "lab.db"
    assert hwl_main(["data", "import", str(table), "--store", str(db)]) == 0
    capsys.readouterr()
    before = _dump(db)
    mine = write_profile(tmp_path, "pixel-x")
    assert hwl_main(["campaign", "run", "--space", "nb201", "--archs", "3,4", "--devices", str(mine), "--store",
                     str(db), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "device pixel-x is in" in err and "imported nb201 table (2 from theirs.csv" in err and \
        "nothing planned" in err, err
    assert _dump(db) == before
    with Store(db) as s:  # another space's table of that name is no clash
        s.add_imported("fbnet", [(",".join(["skip"] * 22), "fbnet-x", 3.0)], source="fb.csv")
        _, _, created = plan_campaign(s, CampaignSpec(space="nb201", archs="3", devices=(
            str(write_profile(tmp_path, "fbnet-x")),)))
        assert created


def test_one_campaign_planned_by_processes_at_once_is_planned_once(tmp_path):
    """The same `hwl campaign run` started twice at once (two terminals, a cron job beside a person): each looked
    the campaign up, found none and created it, and all but the first died of a traceback (sqlite3.IntegrityError:
    UNIQUE constraint failed: campaigns.name). The lookup, the checks and the creation now hold the store's write
    lock together: the others find the campaign planned (and its campaign lock refuses a second coordinator). A
    real writer holding that lock while they start makes them meet there every time."""
    import subprocess
    import time

    profiles = [str(write_profile(tmp_path, name)) for name in ("dev-a", "dev-b")]
    db = tmp_path / "lab.db"
    Store(db).close()
    code = ("import sys; from harness.campaign import CampaignSpec, plan_campaign, resolve_plan\n"
            "from harness.store import Store\n"
            "spec = CampaignSpec(space='nb201', archs='0-9', devices=tuple(sys.argv[2:]))\n"
            "plan = resolve_plan(spec)\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
            "with Store(sys.argv[1]) as st: print(plan_campaign(st, spec, plan)[2])\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), *profiles], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        assert p.stdout.readline() == "ready\n", p.communicate()[1]
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a campaign of the store in the middle of a write
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    time.sleep(2)  # each has looked the campaign up and waits for the write lock
    writer.execute("ROLLBACK")
    writer.close()
    answers = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err for _, err in answers]
    assert sorted(out.strip() for out, _ in answers) == ["False", "False", "True"]
    with Store(db, readonly=True) as s:
        assert len(s.campaign_names()) == 1 and s.integrity_check() == "ok"
        assert s.db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 20


def test_a_quarantine_line_leaves_out_the_errors_own_full_stop():
    """A device quarantined for a changed host key was said as '...someone may be intercepting the connection.;
    once it works again, ...': the error's full stop, then the line's semicolon."""
    from harness.cli.campaign import quarantine_line

    error = ("host key of pi-a (10.0.0.2) does not match known_hosts line 3: got SHA256:x, expected ssh-ed25519 with "
             "another value. If the host was reinstalled, remove that line from known_hosts and record the new key "
             "with `hwl deploy pi-a --trust-new-host`; otherwise someone may be intercepting the connection.")
    line = quarantine_line("pi-a", error, "hwl campaign resume --store lab.db --name c-1")
    assert line == (f"hwl campaign: device pi-a quarantined: {error[:-1]}; once it works again, run the same command "
                    "to finish its jobs (or hwl campaign resume --store lab.db --name c-1, which keeps the settings "
                    "the campaign was planned with)")
    assert quarantine_line("pi-a", None, "r").startswith("hwl campaign: device pi-a quarantined: ?; once it")


def test_a_quarantine_for_the_devices_own_settings_gives_only_its_errors_way_on():
    """A device quarantined for settings this campaign cannot take (more threads than its cores) was told to lower
    them and run the command again, then 'once it works again, run the same command to finish its jobs (or <resume>,
    which keeps the settings ...)': advice that contradicted its own error. The error's way on stands alone."""
    from harness.cli.campaign import quarantine_line

    error = "pi.toml: key 'runtime.threads' = 4 asks more threads ...; lower it and run the same command again."
    line = quarantine_line("pi-a", error, "hwl campaign resume --store lab.db --name c-1", new_settings=True)
    assert line == f"hwl campaign: device pi-a quarantined: {error[:-1]}"
