"""A real Python that lacks one package, as a device that never installed it."""
import subprocess
import sys
import sysconfig
from pathlib import Path


def python_without(folder: Path, package: str) -> Path:
    """A Python with every package of this test's but ``package``: a venv whose site-packages links to each entry of
    ours, that package's own and its dist-info left out."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    theirs = next(folder.glob("lib/python*/site-packages"))
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name != package and not entry.name.startswith(f"{package}-"):
            (theirs / entry.name).symlink_to(entry)
    return folder / "bin" / "python"
