"""Predictor model files (`hwl train`, `adapt`, `onboard`): written with ``torch.save``, read without
running code from the file.

A model file holds a whole method object, so it is a pickle, and a plain unpickle runs whatever
callable the file names. ``load_model`` lets the file name only classes of hwl's own predictors
and a short list of the numpy / pandas / pyarrow / scikit-learn / torch.nn pieces those classes
are made of (the "restricting globals" recipe of Python's pickle documentation); a file that
names anything else is refused before any of it runs.
"""
from __future__ import annotations

import importlib
import pickle
import types
import zipfile
import zlib
from pathlib import Path

from harness.errors import UserError
from harness.paths import users_name, why_not_a_file, written_whole

MODEL_FORMAT = "hwl-fewshot-method"
MODEL_VERSION = 1

# Our own predictors: any class defined in these packages.
OWN_PACKAGES = ("predictors", "spaces")

# What the methods' attributes are made of, by the name pickle records (numpy 1 and 2, pandas 2 and 3).
# Functions here only rebuild data; no class here touches files or processes when built.
ALLOWED_GLOBALS = frozenset({
    "builtins.set", "builtins.frozenset", "builtins.slice", "builtins.bytearray", "builtins.complex",
    "builtins.range", "_codecs.encode", "copyreg._reconstructor", "builtins.object",
    "collections.OrderedDict",
    "numpy.ndarray", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy.core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar",
    "pandas.Series", "pandas.Index", "pandas.RangeIndex", "pandas.StringDtype",
    "pandas.arrays.ArrowStringArray", "pandas.arrays.StringArray",
    "pandas.core.series.Series", "pandas.core.indexes.base.Index", "pandas.core.indexes.base._new_Index",
    "pandas.core.indexes.range.RangeIndex", "pandas.core.arrays.string_.StringDtype",
    "pandas.core.arrays.string_.StringArray", "pandas.core.arrays.string_arrow.ArrowStringArray",
    "pandas.core.internals.managers.SingleBlockManager", "pandas.core.internals.managers.BlockManager",
    "pandas.core.internals.blocks.new_block", "pandas._libs.internals._unpickle_block",
    "pyarrow.lib._restore_array", "pyarrow.lib.py_buffer", "pyarrow.lib.type_for_alias",
    "sklearn.linear_model._ridge.Ridge", "sklearn.linear_model._base.LinearRegression",
    "sklearn.preprocessing._data.StandardScaler",
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch.Size",
})
_PYTHON2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
# torch.nn layers and torch dtypes: any class of these modules, and torch's dtype constants.
TORCH_NN_MODULES = "torch.nn.modules."
DAMAGED = "is a torch file cut short or damaged; write it again"


class ModelFileError(UserError):
    """A model file that is missing, not hwl's, from a newer hwl, or naming code hwl does not load."""


def save_model(path, model, *, method: str, space: str, train_devices, device: str | None = None) -> Path:
    import torch  # torch.save: methods may hold nn.Modules

    path = Path(path).expanduser()  # --out=~/m.pt: no shell expands a tilde after '=' (it made a folder named '~')
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "method": method, "space": space,
             "train_devices": list(train_devices), "device": device, "model": model}
    try:
        with written_whole(path) as target:  # a killed run or a full disk leaves no half model file
            torch.save(saved, target)
    except RuntimeError as exc:  # torch's word for a failed write: "[enforce fail at inline_container.cc...]"
        raise ModelFileError(f"cannot write model file {users_name(path)} ({torch_error(exc)}): is its disk full?"
                             ) from None
    return path


def load_model(path) -> dict:
    """The dict ``save_model`` wrote (keys format, version, method, space, train_devices, device, model)."""
    import torch

    path = Path(path)
    if why := why_not_a_file(path):
        raise ModelFileError(f"model file {path} {why}")
    whole_zip = check_checksums(path)
    try:
        saved = torch.load(path, map_location="cpu", pickle_module=_RESTRICTED_PICKLE, weights_only=False)
    except ModelFileError:
        raise
    except Exception as exc:  # not a torch/pickle file at all, or a truncated one
        if whole_zip:  # torch's own words for it ('[enforce fail at inline_container.cc:180]') say nothing
            raise ModelFileError(f"{path} is not an hwl model file (a zip archive torch.save did not write)") from None
        with open(path, "rb") as head:  # torch.save writes a zip: one cut short is no other kind of file
            damaged = head.read(4) == b"PK\x03\x04"
        what = DAMAGED if damaged else "is not an hwl model file"
        raise ModelFileError(f"{path} {what} ({torch_error(exc)})") from None
    if hasattr(saved, "adapt") and hasattr(saved, "predict"):  # a researcher's torch.save(method)
        raise ModelFileError(f"{path} holds a bare {type(saved).__name__} (torch.save of a method), not an hwl model "
                             "file: write it with harness.model_file.save_model(path, model, method=NAME, "
                             "space=SPACE, train_devices=[...], device=DEVICE)")
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path} is not an hwl model file (write one with `hwl train`)")
    if saved.get("version", 0) > MODEL_VERSION:
        raise ModelFileError(f"{path} was written by a newer hwl (model format {saved['version']}, this hwl "
                             f"reads {MODEL_VERSION}): update hwl")
    return saved


def check_checksums(path: Path) -> bool:
    """Refuse a model file whose zip members fail their CRC-32: ``torch.load`` does not check them, so one flipped
    bit in a saved array loaded as another number (one architecture's prediction 28 ms off, no error). Whether the
    file is a whole zip."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return False  # no whole zip (cut short, or another kind of file): torch.load's error says which
    with archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise ModelFileError(f"{path} {DAMAGED} ({type(exc).__name__}: {exc})") from None
    if bad is not None:  # torch names its parts under the file's own name: data.pkl says enough
        raise ModelFileError(f"{path} {DAMAGED} (its {bad.rsplit('/', 1)[-1]} fails its checksum)")
    return True


def torch_error(exc: Exception) -> str:
    """What went wrong in ``torch.load`` or ``torch.save``, in one sentence: torch's messages run to
    paragraphs of advice, some of it (load with weights_only=False) the opposite of safe."""
    text = str(exc).split("WeightsUnpickler error:")[-1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    sentence = line.split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {sentence}" if sentence else type(exc).__name__


def allowed(module: str, name: str) -> bool:
    """Whether a model file may name ``module.name`` (see the module docstring)."""
    module = _PYTHON2_NAMES.get(module, module)  # torch.save writes pickle protocol 2
    full = f"{module}.{name}"
    if full in ALLOWED_GLOBALS:
        return True
    if module.split(".")[0] in OWN_PACKAGES or module.startswith(TORCH_NN_MODULES):
        obj = _lookup(module, name)
        return isinstance(obj, type) and obj.__module__ == module
    if module == "torch":  # torch.float32 and the other dtypes
        import torch
        return isinstance(getattr(torch, name, None), torch.dtype)
    return False


def _lookup(module: str, name: str):
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    except (ImportError, AttributeError):
        return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if not allowed(module, name):
            raise ModelFileError(f"model file names {module}.{name}, which is not part of an hwl predictor; "
                                 "refusing to load it (it could run code). Write model files with hwl train, "
                                 "adapt or onboard")
        return super().find_class(module, name)


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load takes a module-like object: its Unpickler reads the object, its load an old-format file's header.
_RESTRICTED_PICKLE = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=_restricted_load,
                                           __name__="hwl_restricted_pickle")
