"""Deploying the agent bundle to real sshd hosts started by the test."""
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.remote.bundle import build_bundle
from harness.remote.deploy import DeployError, deploy, undeploy
from harness.remote.selftest import SELFTEST_ARCH
from tests.campaign_helpers import exported_models
from tests.pythons import python_without
from tests.small_disk import small_disk
from tests.sshd import sshd_available, trusted_loopback_host

pytestmark = pytest.mark.skipif(not sshd_available(), reason="openssh-server not installed")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv, h = trusted_loopback_host(tmp_path_factory.mktemp("deploy"))
    yield h
    h.close()
    srv.stop()


def test_bundle_is_reproducible():
    a, b = build_bundle(), build_bundle()
    assert a.sha256 == b.sha256 and a.data == b.data
    assert len(a.sha256) == 64


def test_deploy_with_hosts_python_is_idempotent(host, tmp_path):
    agent_dir = str(tmp_path / "hwl")
    first = deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=agent_dir, use_venv=False)
    assert first.changed
    assert any(step.startswith("pushed agent") for step in first.steps)
    agent_path = Path(first.agent_path)
    assert (agent_path / "agents" / "__init__.py").exists()
    assert (agent_path / "spaces" / "nb201.py").exists()
    assert (Path(agent_dir) / "current").read_text().strip() == first.bundle
    # The pushed agent imports on the host with only its own packages on the path.
    out = host.run(f"cd {agent_path} && {sys.executable} -I -c 'import sys; sys.path.insert(0, \".\"); "
                   f"import agents, spaces; print(spaces.nb201.to_string(0))'").stdout
    assert out.startswith("|avg_pool_3x3~0|")
    second = deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=agent_dir, use_venv=False)
    assert not second.changed, second.steps
    assert undeploy(host, agent_dir=agent_dir, python=sys.executable).startswith("removed")
    assert not Path(agent_dir).exists()
    # undeploying again said 'removed <dir>' once more, as if there had been an agent to remove
    assert undeploy(host, agent_dir=agent_dir, python=sys.executable) == f"nothing to remove: {agent_dir} does " \
        "not exist"



@pytest.mark.parametrize("agent_dir", ["~/.", "~/x/..", "/.", "//"])
def test_undeploy_refuses_an_agent_dir_that_is_the_home_folder_or_above_it(host, agent_dir):
    # '~/.' and '~/x/..' passed a plain comparison with the home folder ('/home' for /home/pi did too); only
    # rm's own refusal of '.' and '..' kept them (and this test on the old code) from removing it
    with pytest.raises(DeployError, match="refusing to remove .* agent_dir must be a subdirectory"):
        undeploy(host, agent_dir=agent_dir, python=sys.executable)
    assert Path("~").expanduser().is_dir()


def test_an_agent_file_changed_on_the_device_is_pushed_again(host, tmp_path):
    # deploy said 'unchanged' once the bundle's directory was complete, so an edited file stayed
    agent_dir = str(tmp_path / "hwl")
    first = deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=agent_dir, use_venv=False)
    edited = Path(first.agent_path) / "agents" / "runtimes" / "ort.py"
    original = edited.read_bytes()
    edited.write_bytes(original + b"\nprint('debugging')\n")
    (Path(first.agent_path) / "agents" / "timing.py").unlink()
    (Path(first.agent_path) / "agents" / "__pycache__").mkdir(exist_ok=True)  # what Python adds is no change
    again = deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=agent_dir, use_venv=False)
    assert again.changed and any(step.startswith("pushed agent") for step in again.steps), again.steps
    assert edited.read_bytes() == original and (Path(first.agent_path) / "agents" / "timing.py").is_file()
    third = deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=agent_dir, use_venv=False)
    assert not third.changed, third.steps

def test_missing_python_is_a_clear_error(host, tmp_path):
    with pytest.raises(DeployError, match="has no `python9.9`"):
        deploy(host, python="python9.9", agent_dir=str(tmp_path / "hwl"))


def test_wrong_machine_is_a_clear_error(host, tmp_path):
    with pytest.raises(DeployError, match="its profile says aarch64"):
        deploy(host, python=sys.executable, agent_dir=str(tmp_path / "hwl"), expected_machine="aarch64",
               use_venv=False)


def test_runtime_missing_without_venv_is_a_clear_error(host, tmp_path):
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    with pytest.raises(DeployError, match="onnxruntime not importable"):
        deploy(host, runtime="onnxruntime", python=str(base_python), agent_dir=str(tmp_path / "hwl"),
               use_venv=False)


@pytest.mark.slow
def test_deploy_installs_runtime_from_wheel_dir(host, tmp_path):
    """A device without internet: wheels are pushed from here and installed with --no-index."""
    wheels = tmp_path / "wheels"
    dl = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:",
                         "-d", str(wheels), "onnxruntime"], capture_output=True, text=True)
    if dl.returncode != 0:
        pytest.skip(f"package registry not reachable: {dl.stderr[-200:]}")
    base_python = str(Path(sys.base_prefix) / "bin" / "python3")
    agent_dir = str(tmp_path / "hwl")
    report = deploy(host, runtime="onnxruntime", python=base_python, agent_dir=agent_dir, wheel_dir=wheels)
    assert any(step.startswith("installed") and "onnxruntime" in step for step in report.steps), report.steps
    out = host.run(f"{report.python} -c 'import onnxruntime; print(onnxruntime.__version__)'").stdout
    assert out.strip()
    again = deploy(host, runtime="onnxruntime", python=base_python, agent_dir=agent_dir, wheel_dir=wheels)
    assert not again.changed, again.steps


def _ssh_profile(folder: Path, host, name: str, agent_dir: Path,
                 more: list[str] = ("[runtime]", 'kind = "onnxruntime"'), python: str = sys.executable) -> Path:
    """A profile for the test's sshd whose agent runs with this test's Python (nothing to install)."""
    profile = folder / f"{name}.toml"
    profile.write_text("\n".join([
        f'name = "{name}"', 'device_class = "embedded_cpu"', "[host]", f'name = "{name}"', 'transport = "ssh"',
        f'address = "{host.address}"', f"port = {host.port}", 'user = "root"', f'key = "{host.key_file}"',
        f'known_hosts = "{host.known_hosts}"', f'python = "{python}"', "use_venv = false",
        f'agent_dir = "{agent_dir}"', *more, ""]))
    return profile


def test_a_device_disk_too_full_for_the_agent_is_named_and_the_other_devices_are_deployed(host, tmp_path, capsys):
    # SFTP said only 'Failure': a traceback, a bundle.zip.part cut short left on the device, and the devices after
    # it in the same `hwl deploy` never deployed
    from harness.cli import main as hwl_main

    with small_disk(tmp_path / "small-device-disk", 1) as disk:  # the bundle and its files take about 0.4 MB
        (disk / "someone-elses.log").write_bytes(b"x" * 900_000)
        full = _ssh_profile(tmp_path, host, "pi-full", disk / "hwl")
        roomy = _ssh_profile(tmp_path, host, "pi-roomy", tmp_path / "hwl")
        assert hwl_main(["deploy", str(full), str(roomy), "--no-selftest"]) == 1
        out, err = capsys.readouterr()
        assert re.fullmatch(r"pi-full: error: the disk under \S+ on pi-full is full for agent \S+ \(zip and "
                            r"unpacked\): \d+ kB free, \d+ kB needed; free space there, or give the profile an "
                            r"agent_dir on another disk\n", err), err
        assert not [p for p in disk.rglob("*") if p.is_file() and p.name != "someone-elses.log"]
    assert [json.loads(line)["device"] for line in out.splitlines()] == ["pi-roomy"]
    assert (tmp_path / "hwl" / "current").is_file()


def test_a_device_disk_too_full_for_the_selftest_record_is_named_and_the_other_devices_are_deployed(
        host, tmp_path, capsys, model_cache):
    # the self-test measured, then SFTP said only 'Failure' writing its record: an OSError traceback, and the devices
    # after it in the same `hwl deploy` never deployed
    from harness.cli import main as hwl_main

    artifacts = exported_models(model_cache, tmp_path / "artifacts", str(SELFTEST_ARCH[1]))
    with small_disk(tmp_path / "small-device-disk", 8) as disk:  # the agent and the self-test's model take 6.5 MB
        full = _ssh_profile(tmp_path, host, "pi-full", disk / "hwl")
        roomy = _ssh_profile(tmp_path, host, "pi-roomy", tmp_path / "hwl")
        assert hwl_main(["deploy", str(full), "--artifacts", str(artifacts)]) == 0, capsys.readouterr().err
        capsys.readouterr()
        (disk / "hwl" / "selftest.json").unlink()  # so the next deploy self-tests again, with its model cached
        with contextlib.suppress(OSError), open(disk / "someone-elses.log", "wb") as filler:
            filler.write(b"x" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize))
        assert hwl_main(["deploy", str(full), str(roomy), "--artifacts", str(artifacts)]) == 1
        out, err = capsys.readouterr()
        assert re.fullmatch(r"pi-full: error: the disk under \S+ on pi-full is full for the self-test record: 0 kB "
                            r"free, [1-9]\d* kB needed; free space there, or give the profile an agent_dir on another "
                            r"disk\n", err), err
    assert [json.loads(line)["device"] for line in out.splitlines()] == ["pi-roomy"]


def test_a_device_whose_disk_went_read_only_fails_its_selftest_in_one_line_saying_why(host, tmp_path, capsys,
                                                                                       model_cache):
    # a Pi's SD card remounted read-only after I/O errors: 'pi-ro: error: pi-ro: the agent did not start; ... its log
    # ends with:' and lines of an earlier healthy run, nothing of why
    import subprocess

    from harness.cli import main as hwl_main

    artifacts = exported_models(model_cache, tmp_path / "artifacts", str(SELFTEST_ARCH[1]))
    with small_disk(tmp_path / "sd-card", 4) as disk:
        profile = _ssh_profile(tmp_path, host, "pi-ro", disk / "hwl")
        assert hwl_main(["deploy", str(profile), "--no-selftest"]) == 0
        (disk / "hwl" / "agent.log").write_text("an earlier, healthy run\n")  # and its model cache, as campaigns leave
        (disk / "hwl" / "cache").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        capsys.readouterr()
        assert hwl_main(["deploy", str(profile), "--artifacts", str(artifacts)]) == 1
        # then 'the agent did not start; ... its start said: ...agent.log: Read-only file system'; now the folder first
        assert capsys.readouterr().err == f"pi-ro: error: {disk}/hwl (agent_dir) on pi-ro cannot be written " \
            "(Read-only file system): the agent writes its log and model cache there; make it writable (a disk " \
            "remounted read-only after errors needs checking), or give the profile an agent_dir on another disk\n"


def test_a_device_whose_agent_dir_went_read_only_fails_at_once_naming_the_folder(host, tmp_path):
    # the agent's start failed as a lost link: its actor retried for reconnect_timeout_s (a campaign took 120 s to
    # quarantine the device), though no retry mends a read-only disk
    import subprocess

    from harness.device_worker import DeviceWorker
    from harness.profiles import load_profile
    from harness.transport.errors import DeviceSetupError

    with small_disk(tmp_path / "sd-card", 4) as disk:
        profile = _ssh_profile(tmp_path, host, "pi-ro", disk / "hwl", ["reconnect_timeout_s = 120", "[runtime]",
                                                                       'kind = "onnxruntime"'])
        deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=str(disk / "hwl"), use_venv=False)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        worker = DeviceWorker(load_profile(profile))
        started = time.monotonic()
        with pytest.raises(DeviceSetupError) as refused:
            worker.hello()
        worker.close()
    assert time.monotonic() - started < 10
    assert str(refused.value) == f"pi-ro: {disk}/hwl (agent_dir) on pi-ro cannot be written (Read-only file " \
        "system): the agent writes its log and model cache there; make it writable (a disk remounted read-only " \
        "after errors needs checking), or give the profile an agent_dir on another disk"


def test_undeploy_removes_only_what_hwl_put_in_the_agent_dir(host, tmp_path, capsys, model_cache):
    # undeploy ran `rm -rf agent_dir`: an agent_dir on a USB disk (where a full SD card sent it) lost every file on it
    from harness.cli import main as hwl_main

    artifacts = exported_models(model_cache, tmp_path / "artifacts", str(SELFTEST_ARCH[1]))
    usb, own = tmp_path / "usb", tmp_path / "own"
    (usb / "photos").mkdir(parents=True)
    (usb / "photos" / "thesis.tex").write_text("years of work")
    # a `cache` of the user's own there, which hwl's model cache shares: undeploy took it whole
    (usb / "cache" / "thumbnails").mkdir(parents=True)
    (usb / "cache" / "thumbnails" / "a.png").write_text("a thumbnail")
    profiles = [_ssh_profile(tmp_path, host, "pi-usb", usb), _ssh_profile(tmp_path, host, "pi-own", own)]
    assert hwl_main(["deploy", *map(str, profiles), "--artifacts", str(artifacts)]) == 0, capsys.readouterr().err
    assert {"agent.log", "cache", "selftest.json"} <= {p.name for p in usb.iterdir()}  # a self-test's files too
    assert {"jobs-in-flight", "thumbnails"} < {p.name for p in (usb / "cache").iterdir()}  # and its model
    capsys.readouterr()
    assert hwl_main(["undeploy", *map(str, profiles)]) == 0
    assert capsys.readouterr().out == (f"pi-usb: removed hwl's files from {usb} and kept the folder, which holds 2 "
                                       f"entries hwl did not put there\npi-own: removed {own}\n")
    assert sorted(str(p.relative_to(usb)) for p in usb.rglob("*")) == [
        "cache", "cache/thumbnails", "cache/thumbnails/a.png", "photos", "photos/thesis.tex"]
    assert not own.exists()


def test_status_of_a_reachable_device_with_no_agent_exits_1_saying_how_to_deploy(host, tmp_path, capsys):
    # it exited 0, as for a device ready to measure: a script checking the lab went on to a campaign, which
    # quarantined the device at its first try
    from harness.cli import main as hwl_main

    profile = _ssh_profile(tmp_path, host, "pi-bare", tmp_path / "hwl")
    said = f"pi-bare: no agent is deployed on pi-bare under {tmp_path}/hwl: run `hwl deploy {profile}` first\n"
    assert hwl_main(["status", str(profile)]) == 1
    assert capsys.readouterr().out.endswith(said)
    assert hwl_main(["status", str(profile), "--json"]) == 1
    row = json.loads(capsys.readouterr().out)[0]
    assert row["reachable"] is True and row["usable"] is False and f"{row['device']}: {row['error']}\n" == said
    deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=str(tmp_path / "hwl"), use_venv=False)
    assert hwl_main(["status", str(profile), "--json"]) == 0  # no self-test yet: nothing known to be wrong
    assert json.loads(capsys.readouterr().out)[0]["usable"] is True


def test_a_profile_python_missing_on_a_deployed_device_is_named_by_status_and_the_session(host, tmp_path, capsys):
    # the agent's start failed with status 127 at each reconnect: a campaign waited 120 s to quarantine the device,
    # its reason the log's 'No such file or directory' line once a try, and `hwl status` said nothing was wrong
    from harness.cli import main as hwl_main
    from harness.profiles import load_profile
    from harness.remote.connect import ssh_session_for
    from harness.transport.errors import DeviceSetupError

    deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=str(tmp_path / "hwl"), use_venv=False)
    profile = _ssh_profile(tmp_path, host, "pi-nopy", tmp_path / "hwl")
    profile.write_text(profile.read_text().replace(f'python = "{sys.executable}"', 'python = "/usr/bin/python9"'))
    said = f"pi-nopy has no `/usr/bin/python9`: install Python >= 3.10 there, or set key 'host.python' of {profile} " \
           "to its path"
    assert hwl_main(["status", str(profile), "--json"]) == 1  # a device that cannot measure fails the check
    assert json.loads(capsys.readouterr().out)[0]["error"] == said
    started = time.monotonic()
    with pytest.raises(DeviceSetupError) as refused, ssh_session_for(load_profile(profile)) as session:
        session.open()
    assert str(refused.value) == f"pi-nopy: {said}" and time.monotonic() - started < 10


def _tvm_library(folder: Path, name: str, data: bytes) -> None:
    """A library and its digest file in ``folder``, as scripts/build_tvm_libraries leaves them."""
    import hashlib

    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    (folder / f"{name}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")


def _tvm_profile(tmp_path: Path, host, library_dir: Path) -> Path:
    return _ssh_profile(tmp_path, host, "pi-tvm", tmp_path / "hwl",
                        ["[runtime]", 'kind = "tvm"', "[runtime.options]", f'library_dir = "{library_dir}"'])


def test_a_library_dir_too_full_for_the_tvm_libraries_is_named_and_nothing_is_left_there(host, tmp_path, capsys):
    from harness.cli import main as hwl_main

    libs = tmp_path / "tvm-libs"
    _tvm_library(libs, "ab" * 32 + ".so", os.urandom(2_000_000))
    with small_disk(tmp_path / "small-device-disk", 1) as disk:
        profile = _tvm_profile(tmp_path, host, disk / "libs")
        assert hwl_main(["deploy", str(profile), "--tvm-libraries", str(libs), "--no-selftest"]) == 1
        assert re.fullmatch(r"pi-tvm: error: the disk under \S+ on pi-tvm is full for 2 files of --tvm-libraries: "
                            r"\d+ kB free, 1954 kB needed; free space there, or give the profile another "
                            r"library_dir\n", capsys.readouterr().err)
        assert not list((disk / "libs").iterdir())


def test_hwl_deploy_copies_tvm_libraries_into_the_profiles_library_dir(host, tmp_path, capsys):
    # README told the user to scp the build host's folder and chmod it; `hwl deploy --tvm-libraries` does it
    from harness.cli import main as hwl_main

    libs, device_libs, name = tmp_path / "tvm-libs", tmp_path / "device-libs", "cd" * 32 + ".so"
    _tvm_library(libs, name, b"a library as scripts/build_tvm_libraries leaves it")
    profile = _tvm_profile(tmp_path, host, device_libs)

    def deploy_steps():
        assert hwl_main(["deploy", str(profile), "--tvm-libraries", str(libs), "--no-selftest"]) == 0
        return json.loads(capsys.readouterr().out.splitlines()[0])["steps"]

    assert f"copied 1 TVM library to {device_libs} (sha256 verified)" in deploy_steps()
    assert (device_libs / name).read_bytes() == (libs / name).read_bytes()
    assert (device_libs / f"{name}.sha256").read_text() == (libs / f"{name}.sha256").read_text()
    assert device_libs.stat().st_mode & 0o022 == 0 and device_libs.stat().st_uid == os.geteuid()
    assert f"unchanged: 1 TVM library in {device_libs}" in deploy_steps()
    elsewhere = tmp_path / "elsewhere"
    device_libs.rename(elsewhere)
    device_libs.symlink_to(elsewhere)  # the agent refuses a link: deploy says so rather than copy into it
    assert hwl_main(["deploy", str(profile), "--tvm-libraries", str(libs), "--no-selftest"]) == 1
    assert f"pi-tvm: error: library_dir {device_libs} on pi-tvm must be a folder of root that no other user may " \
           "write" in capsys.readouterr().err


def _deploy_lost_and_fine(tmp_path: Path, host, capsys, python_script: Path) -> tuple[str, str]:
    """``hwl deploy`` of pi-lost, whose profile python is ``python_script`` (it cuts the link), then pi-fine:
    exit 1, and its stdout and stderr."""
    from harness.cli import main as hwl_main

    python_script.chmod(0o755)
    lost = _ssh_profile(tmp_path, host, "pi-lost", tmp_path / "hwl-lost")
    lost.write_text(lost.read_text().replace(f'python = "{sys.executable}"', f'python = "{python_script}"'))
    fine = _ssh_profile(tmp_path, host, "pi-fine", tmp_path / "hwl-fine")
    assert hwl_main(["deploy", str(lost), str(fine), "--no-selftest"]) == 1
    return capsys.readouterr()


def _link_cutter(path: Path) -> Path:
    """A program that, run on the test's sshd, drops the link it was started over."""
    path.write_text(f"""#!{sys.executable}
import os, signal
pid = os.getppid()
while pid > 1:  # the nearest sshd above this command serves its connection: killing it drops the link
    if open(f"/proc/{{pid}}/comm").read().startswith("sshd"):
        os.kill(pid, signal.SIGKILL)
        break
    pid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
""")
    path.chmod(0o755)
    return path


def test_a_link_lost_during_deploy_is_named_as_such_and_the_other_devices_are_deployed(host, tmp_path, capsys):
    # the command running when the link went had no exit status, which read "`... -c '...'` exited -1: "
    out, err = _deploy_lost_and_fine(tmp_path, host, capsys, _link_cutter(tmp_path / "python-that-cuts-the-link"))
    assert re.fullmatch(r"pi-lost: error: lost the connection to it \(\S+\) while it ran `[^`]+\.\.\.`; check "
                        r"the device is up and its network, then run the command again\n", err), err
    assert [json.loads(line)["device"] for line in out.splitlines()] == ["pi-fine"]


def test_a_link_lost_while_the_agent_is_pushed_is_one_line_and_the_other_devices_are_deployed(host, tmp_path,
                                                                                              capsys):
    # an SFTP write cut short ended `hwl deploy` in a traceback ('Server connection dropped'), and the devices
    # after it were never deployed
    agent_path = tmp_path / "hwl-lost" / "agents" / build_bundle().name
    python_leaving_a_cutter = tmp_path / "python-leaving-a-cutter"
    part = agent_path / "bundle.zip.part"
    python_leaving_a_cutter.write_text(f"""#!/bin/sh
# the probe runs as usual; the process it leaves behind kills the sshd serving this connection (and its SFTP) once
# the agent's upload has begun (or gives up after 30 s, never left spinning)
pid=$$
while [ "$pid" -gt 1 ]; do
  case "$(cat /proc/$pid/comm)" in sshd*) break;; esac
  pid=$(cut -d' ' -f4 /proc/$pid/stat)
done
setsid timeout 30 sh -c 'while [ ! -e {part} ]; do :; done; kill -9 '$pid </dev/null >/dev/null 2>&1 &
exec {sys.executable} "$@"
""")
    out, err = _deploy_lost_and_fine(tmp_path, host, capsys, python_leaving_a_cutter)
    assert err.startswith("pi-lost: error: lost the connection to it (") and err.count("\n") == 1, err
    assert "check the device is up and its network, then run the command again" in err
    assert [json.loads(line)["device"] for line in out.splitlines()] == ["pi-fine"]
    assert not (agent_path / "agents").exists()  # nothing unpacked from a cut upload


def _cut_link_once_read(fifo: Path):
    """A thread that makes ``fifo`` and, once a command on the device opens it, kills the sshd serving that
    command's connection (the nearest sshd above it): the link drops while the command waits for input."""
    import threading

    import psutil

    os.mkfifo(fifo)

    def cut():
        with open(fifo, "w"):  # returns once the reader has opened it
            reader = next(p for p in psutil.process_iter(["cmdline"]) if str(fifo) in " ".join(p.info["cmdline"] or []))
            next(p for p in reader.parents() if p.name().startswith("sshd")).kill()

    thread = threading.Thread(target=cut, daemon=True)
    thread.start()
    return thread


def _deployed_agent_copies(host, tmp_path: Path, names) -> None:
    """An agent deployed (once, then copied) to tmp_path / f"hwl-{name}" for each name."""
    import shutil

    deploy(host, runtime="onnxruntime", python=sys.executable, agent_dir=str(tmp_path / "hwl"), use_venv=False)
    for name in names:
        shutil.copytree(tmp_path / "hwl", tmp_path / f"hwl-{name}", symlinks=True)


LOST = r"lost the connection to {} \(\S+\) {}; check the device is up and its network, then run the command again"


def test_a_link_lost_during_status_is_one_line_the_device_unreachable_and_the_others_shown(host, tmp_path, capsys):
    # a link lost while a command ran left the device 'reachable' and exited 0; one lost during SFTP (the agent's
    # .complete is looked up there) ended `hwl status` in an EOFError traceback, the devices after it never shown
    from harness.cli import main as hwl_main

    _deployed_agent_copies(host, tmp_path, ["pi-cmd", "pi-sftp", "pi-fine"])
    (tmp_path / "cutting-sftp").mkdir()
    cutting_sftp, sftp_host = trusted_loopback_host(tmp_path / "cutting-sftp",
                                                    sftp_server=_link_cutter(tmp_path / "sftp-that-cuts-the-link"))
    try:
        profiles = [_ssh_profile(tmp_path, host, "pi-cmd", tmp_path / "hwl-pi-cmd"),
                    _ssh_profile(tmp_path, sftp_host, "pi-sftp", tmp_path / "hwl-pi-sftp"),
                    _ssh_profile(tmp_path, host, "pi-fine", tmp_path / "hwl-pi-fine")]
        cutter = _cut_link_once_read(tmp_path / "hwl-pi-cmd" / "selftest.json")
        code = hwl_main(["status", *map(str, profiles), "--json"])
        cutter.join(10)
    finally:
        cutting_sftp.stop()
    out, err = capsys.readouterr()
    rows = {r["device"]: r for r in json.loads(out)}
    assert code == 1 and not err, (code, out, err)
    assert rows["pi-cmd"]["reachable"] is False and rows["pi-sftp"]["reachable"] is False
    assert re.fullmatch(LOST.format("pi-cmd", "while it ran `cat [^`]+`"), rows["pi-cmd"]["error"])
    # paramiko's words depend on the step the link went in ('EOF during negotiation', 'Channel closed.')
    assert re.fullmatch(LOST.format("pi-sftp", r"during status \(\w+: .*\)"), rows["pi-sftp"]["error"]), rows
    assert rows["pi-fine"]["reachable"] is True and rows["pi-fine"]["error"] is None


def test_a_link_lost_during_logs_is_one_line(host, tmp_path, capsys):
    # already so at 738f39f: `hwl logs` reads one device, with commands only (Host.run names a lost link)
    from harness.cli import main as hwl_main

    _deployed_agent_copies(host, tmp_path, ["pi-cmd"])
    cutter = _cut_link_once_read(tmp_path / "hwl-pi-cmd" / "agent.log")
    code = hwl_main(["logs", str(_ssh_profile(tmp_path, host, "pi-cmd", tmp_path / "hwl-pi-cmd"))])
    cutter.join(10)
    out, err = capsys.readouterr()
    assert code == 2 and not out, (code, out, err)
    assert re.fullmatch("hwl logs: error: " + LOST.format("pi-cmd", "while it ran `tail [^`]+`") + "\n", err), err


def test_a_key_other_users_may_read_is_refused_by_deploy_status_logs_and_a_campaign_naming_the_profile(host, tmp_path,
                                                                                                        capsys):
    # hwl logged in with a profile key that ssh refuses ('UNPROTECTED PRIVATE KEY FILE!'): deploy, status, logs and
    # a campaign's session all used it
    import shutil

    from harness.cli import main as hwl_main
    from harness.profiles import load_profile
    from harness.remote.connect import ssh_session_for
    from harness.transport.errors import DeviceSetupError

    key = tmp_path / "lab_key"
    shutil.copy(host.key_file, key)
    key.chmod(0o644)
    profile = _ssh_profile(tmp_path, host, "pi-open-key", tmp_path / "hwl")
    profile.write_text(profile.read_text().replace(f'key = "{host.key_file}"', f'key = "{key}"'))
    said = (f"key {key} of profile pi-open-key has mode 0644: other users may read it, and ssh refuses such a key; "
            f"make it yours alone with `chmod 600 {key}`")
    assert hwl_main(["deploy", str(profile), "--no-selftest"]) == 1
    assert capsys.readouterr().err == f"pi-open-key: error: {said}\n"
    assert hwl_main(["status", str(profile), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["error"] == said
    assert hwl_main(["logs", str(profile)]) == 2
    assert capsys.readouterr().err == f"hwl logs: error: {said}\n"
    with pytest.raises(DeviceSetupError) as refused, ssh_session_for(load_profile(profile)) as session:
        session.open()
    assert str(refused.value) == f"pi-open-key: {said}"
    assert not (tmp_path / "hwl").exists()


def test_a_key_file_missing_or_unreadable_is_named_with_the_profile_file_and_key(host, tmp_path, capsys, monkeypatch):
    # 'key file ... for pi-1 does not exist' named the device alone: which file, and which of its keys, wrote it
    from harness.cli import main as hwl_main

    profile = _ssh_profile(tmp_path, host, "pi-no-key", tmp_path / "hwl")
    missing = tmp_path / "keys" / "lab_key"
    profile.write_text(profile.read_text().replace(f'key = "{host.key_file}"', f'key = "{missing}"'))
    said = f"key file {missing} for pi-no-key does not exist (named by key 'host.key' of {profile})"
    assert hwl_main(["deploy", str(profile), "--no-selftest"]) == 1
    assert capsys.readouterr().err == f"pi-no-key: error: {said}\n"
    assert hwl_main(["status", str(profile), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["error"] == said
    missing.parent.mkdir()
    missing.write_text("not a key\n")  # one that cannot be read: 'cannot read private key ...' named it alone
    missing.chmod(0o600)
    assert hwl_main(["deploy", str(profile), "--no-selftest"]) == 1
    assert capsys.readouterr().err.startswith(f"pi-no-key: error: cannot read private key {missing} (named by key "
                                              f"'host.key' of {profile}): ")
    missing.unlink()
    # a key the profile leaves to ~/.ssh/config names the config
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(f"Host pi-alias\n  HostName {host.address}\n  IdentityFile {missing}\n")
    profile.write_text(profile.read_text().replace(f'key = "{missing}"\n', "").replace(
        f'address = "{host.address}"', 'address = "pi-alias"'))
    assert hwl_main(["logs", str(profile)]) == 2
    assert capsys.readouterr().err == (f"hwl logs: error: key file {missing} for pi-no-key does not exist (named by "
                                       "the IdentityFile ~/.ssh/config gives 'pi-alias')\n")
    assert not (tmp_path / "hwl").exists()


def test_known_hosts_flag_that_a_profiles_own_known_hosts_overrides_is_named(host, tmp_path, capsys):
    # --known-hosts was taken and, for a profile naming its own known_hosts, silently not used (its help said it
    # was the file host keys are checked against): --trust-new-host then recorded keys in the profile's file
    from harness.cli import main as hwl_main

    profile = _ssh_profile(tmp_path, host, "pi-own-known", tmp_path / "hwl")
    other = tmp_path / "lab_known_hosts"
    other.write_text("")
    assert hwl_main(["status", str(profile), "--json", "--known-hosts", str(other)]) == 1  # no agent deployed
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["reachable"] is True  # checked against the profile's file, which knows the host
    assert err == (f"hwl: pi-own-known checks host keys against {host.known_hosts}, the known_hosts of its profile "
                   f"{profile}, not --known-hosts {other}\n")
    assert hwl_main(["status", str(profile), "--json", "--known-hosts", str(host.known_hosts)]) == 1
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        hwl_main(["deploy", "--help"])
    assert "for devices whose profile names none (its own known_hosts wins" in " ".join(capsys.readouterr().out.split())


def test_the_known_hosts_of_the_environment_as_written_is_the_profiles_own_file(tmp_path, monkeypatch, capsys):
    """HWL_KNOWN_HOSTS set by hand to the profile's own file, written relative (not through --known-hosts, which
    resolves it), was compared unresolved and warned of as another file."""
    from harness.cli.devices import warn_of_own_known_hosts
    from harness.profiles import load_profile
    from harness.remote.connect import KNOWN_HOSTS_ENV

    host = SimpleNamespace(address="192.0.2.7", port=22, key_file=tmp_path / "id", known_hosts=tmp_path / "kh")
    profile = load_profile(_ssh_profile(tmp_path, host, "pi-env-known", tmp_path / "hwl"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(KNOWN_HOSTS_ENV, "kh")
    warn_of_own_known_hosts([profile])
    monkeypatch.setenv(KNOWN_HOSTS_ENV, "other_kh")
    warn_of_own_known_hosts([profile])
    assert capsys.readouterr().err == (f"hwl: pi-env-known checks host keys against {tmp_path / 'kh'}, the "
                                       f"known_hosts of its profile {tmp_path / 'pi-env-known.toml'}, not "
                                       "--known-hosts other_kh\n")


def test_a_wheel_dir_that_is_no_folder_is_named_with_the_profile_before_the_device_is_reached(host, tmp_path, capsys,
                                                                                                monkeypatch):
    # deploy made the device's venv, then said 'wheel directory wheels/aarch64 has no .whl files' of a folder that
    # is not there (a relative one read from the folder hwl runs in), naming neither the profile nor its key
    from harness.cli import main as hwl_main

    monkeypatch.chdir(tmp_path)
    runtime = ["[runtime]", 'kind = "onnxruntime"']
    missing = _ssh_profile(tmp_path, host, "pi-wheels", tmp_path / "hwl", ['wheel_dir = "wheels/aarch64"', *runtime])
    (tmp_path / "wheels.txt").write_text("")
    a_file = _ssh_profile(tmp_path, host, "pi-wheel-file", tmp_path / "hwl", [f'wheel_dir = "{tmp_path}/wheels.txt"',
                                                                               *runtime])
    assert hwl_main(["deploy", str(missing), str(a_file), "--no-selftest"]) == 1
    assert capsys.readouterr().err == (
        f"pi-wheels: error: {missing}: key 'host.wheel_dir' = 'wheels/aarch64' does not exist (read from the folder "
        f"hwl runs in: {tmp_path}/wheels/aarch64)\n"
        f"pi-wheel-file: error: {a_file}: key 'host.wheel_dir' = '{tmp_path}/wheels.txt' is a file, not a folder\n")
    assert not (tmp_path / "hwl").exists()  # the devices were not reached


def test_logs_of_a_device_with_no_agent_says_to_deploy_it(host, tmp_path, capsys):
    # `hwl logs` of a device never deployed (or undeployed) said '(no agent log at ...)' and exited 0, where
    # `hwl status` says no agent is deployed and which `hwl deploy` to run
    from harness.cli import main as hwl_main

    profile = _ssh_profile(tmp_path, host, "pi-no-agent", tmp_path / "hwl")
    assert hwl_main(["logs", str(profile)]) == 2
    assert capsys.readouterr().err == (f"hwl logs: error: no agent is deployed on pi-no-agent under "
                                       f"{tmp_path / 'hwl'}: run `hwl deploy {profile}` first\n")
    assert hwl_main(["deploy", str(profile), "--no-selftest"]) == 0
    capsys.readouterr()
    assert hwl_main(["logs", str(profile)]) == 0  # deployed, its agent never started: no log yet
    assert capsys.readouterr().out == (f"(no agent log at {tmp_path / 'hwl' / 'agent.log'} on pi-no-agent: its agent "
                                       "has not run since it was deployed)\n")


def test_deploy_prune_removes_only_the_libraries_the_tvm_libraries_folder_no_longer_holds(host, tmp_path, capsys):
    # the libraries of models no longer in --tvm-libraries stayed in library_dir for good, filling a device's disk
    from harness.cli import main as hwl_main

    libs, device_libs = tmp_path / "tvm-libs", tmp_path / "device-libs"
    kept, dropped = "ab" * 32 + ".so", "cd" * 32 + ".so"
    for name in (kept, dropped):
        _tvm_library(libs, name, name.encode())
    profile = _tvm_profile(tmp_path, host, device_libs)

    def deploy_steps(*flags):
        assert hwl_main(["deploy", str(profile), "--tvm-libraries", str(libs), "--no-selftest", *flags]) == 0
        return json.loads(capsys.readouterr().out.splitlines()[0])["steps"]

    deploy_steps()
    (libs / dropped).unlink()
    (libs / f"{dropped}.sha256").unlink()
    assert f"unchanged: 1 TVM library in {device_libs}" in deploy_steps()  # without --prune: nothing removed
    (device_libs / f"{kept}.part").write_bytes(b"a copy cut short")
    outside = tmp_path / "outside.so"
    outside.write_bytes(b"not in library_dir")
    others = {"notes.txt", "EF" * 32 + ".so", "12" * 32 + ".so", "34" * 32 + ".so"}  # none a file deploy writes
    (device_libs / "notes.txt").write_text("the lab's")
    (device_libs / ("EF" * 32 + ".so")).write_bytes(b"upper case")
    (device_libs / ("12" * 32 + ".so")).symlink_to(outside)
    (device_libs / ("34" * 32 + ".so")).mkdir()
    # the 3 files: the dropped library, its digest, and the copy cut short
    assert f"pruned 1 TVM library that {libs} no longer holds from {device_libs} (3 files)" in deploy_steps("--prune")
    assert {p.name for p in device_libs.iterdir()} == {kept, f"{kept}.sha256", *others}
    assert outside.read_bytes() == b"not in library_dir"
    assert f"nothing to prune in {device_libs}" in deploy_steps("--prune")
    assert hwl_main(["deploy", str(profile), "--prune"]) == 2
    assert capsys.readouterr().err == ("hwl deploy: error: --prune removes the TVM libraries that the --tvm-libraries "
                                       "folder no longer holds: give --tvm-libraries LOCAL_DIR too\n")


def test_a_tvm_device_that_builds_its_models_gets_onnx_checked_there_and_one_with_prebuilt_libraries_does_not(
        host, tmp_path, capsys):
    """apache-tvm does not install onnx, with which TVM reads the ONNX file of each model it builds on the device:
    deploy left it out, and every model there (the self-test's first) failed with "No module named 'onnx'"."""
    from harness.cli import main as hwl_main

    python = python_without(tmp_path / "device-python", "onnx")
    builds = _ssh_profile(tmp_path, host, "pi-tvm-build", tmp_path / "hwl", ["[runtime]", 'kind = "tvm"'],
                          python=python)
    assert hwl_main(["deploy", str(builds), "--no-selftest"]) == 1
    err = capsys.readouterr().err
    assert f"pi-tvm-build: error: onnx not importable with `{python}` on pi-tvm-build (onnx: without " \
           "runtime.options.library or library_dir the agent builds each model from its ONNX file there)" in err, err
    prebuilt = _ssh_profile(tmp_path, host, "pi-tvm-libs", tmp_path / "hwl",
                            ["[runtime]", 'kind = "tvm"', "[runtime.options]", f'library_dir = "{tmp_path / "libs"}"'],
                            python=python)
    assert hwl_main(["deploy", str(prebuilt), "--no-selftest"]) == 0, capsys.readouterr().err
