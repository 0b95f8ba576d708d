"""Environment fingerprint: what it reads here, and an id that ignores volatile fields."""
import os
import platform

from agents import __version__, fingerprint


def test_fingerprint_reads_this_machine():
    fp = fingerprint.collect()
    assert fp["agent_version"] == __version__ and fp["kernel"] == platform.release()
    assert fp["cpu_model"] and fp["cpu_count"] == os.cpu_count() and fp["mem_total_kb"] > 0
    assert len(fp["load_avg"]) == 3 and isinstance(fp["cpufreq"], dict) and isinstance(fp["temperatures_c"], dict)
    assert fp["runtime_versions"]["onnxruntime"] and fp["runtime_versions"]["numpy"]
    assert fp["affinity"] == sorted(os.sched_getaffinity(0))


def test_fingerprint_id_covers_stable_fields_only():
    fp = fingerprint.collect()
    fid = fingerprint.fingerprint_id(fp)
    assert len(fid) == 16 and int(fid, 16) >= 0
    volatile = dict(fp, load_avg=[99.0, 99.0, 99.0], mem_available_kb=1, temperatures_c={"x": 90.0}, hostname="other")
    assert fingerprint.fingerprint_id(volatile) == fid
    assert fingerprint.fingerprint_id(dict(fp, kernel="0.0-other")) != fid
    assert fingerprint.fingerprint_id(dict(fp, runtime_versions={"onnxruntime": "0.1"})) != fid
