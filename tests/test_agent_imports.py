"""`import agents` (and the server it runs) must load no heavy package: a Pi has numpy + one runtime."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ["torch", "ray", "pandas", "paramiko", "scipy", "harness", "onnxruntime", "tvm", "onnx", "rich",
             "spaces", "sklearn", "matplotlib"]


def test_agent_modules_import_no_heavy_package():
    code = (
        "import sys, json\n"
        "import agents, agents.protocol, agents.server, agents.child, agents.fingerprint, agents.timing\n"
        "import agents.measurement, agents.runtimes, agents.runtimes.base, agents.runtimes.command, agents.__main__\n"
        # TVM's adapter imports TVM (4-5 s) only past its refusals, and onnx only to read a model: a device given a
        # prebuilt library has none
        "import agents.runtimes.tvm_vm, agents.runtimes.onnx_model\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_bare_import_does_not_even_load_numpy():
    code = "import sys, agents; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
