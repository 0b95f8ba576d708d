"""`hwl predict`: predicted latencies of architectures on an adapted device."""
from __future__ import annotations

from pathlib import Path

from harness.cli.common import add_archs_flags, read_in_model_space, user_path
from harness.errors import UserError
from harness.model_file import load_model
from harness.paths import check_outputs, written_whole
from harness.text import count
from predictors import registry
from spaces.selection import arch_file
from spaces import nb201, resolve_archs


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict latencies on an adapted device")
    p.add_argument("model", type=user_path, help="adapted model file from `hwl adapt`")
    p.add_argument("--device", required=True, help="the device the model was adapted to")
    add_archs_flags(p, required=True)
    p.add_argument("--out", type=user_path, required=True, help="predictions file (.parquet or .csv)")
    p.set_defaults(func=run)


def run(args) -> int:
    path, n = predict(model=args.model, device=args.device, archs=args.archs, seed=args.seed, out=args.out)
    print(f"wrote {count(n, 'prediction', 'predictions')} to {path}")
    return 0


def predict(*, model, device: str, archs, out, seed: int = 0):
    """Write ``arch, [arch_str,] device, predicted_ms`` for ``archs``; returns (path, rows)."""
    check_outputs({"--out": out}, {"the model file": model, "--archs": arch_file(archs)})
    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".csv"):  # any case: --out X.CSV was refused as no table name
        raise UserError(f"--out {out}: use a .parquet or .csv file name")
    saved = load_model(model)
    if saved.get("device") is None:
        raise UserError(f"{model} is not adapted to a device yet: run `hwl adapt {model} --device {device} "
                        "--measurements FILE --out adapted.pt` first")
    if saved["device"] != device:
        raise UserError(f"{model} is adapted to {saved['device']!r}, not {device!r}")
    if saved.get("method") in registry.RANK_ONLY:  # its numbers are a FLOP count or another device's ms
        raise UserError(f"{model} holds method {saved['method']!r}, which ranks architectures but does not predict "
                        f"this device's latency in ms, so it has no predicted_ms to write; score it with `hwl "
                        f"evaluate --method {saved['method']}`, or train one of "
                        f"{', '.join(registry.latency_methods())}")
    space = saved["space"]
    keys = read_in_model_space(model, space, lambda in_space: resolve_archs(in_space, archs, seed=seed))
    import pandas as pd  # imported to write the table, not to refuse a flag (--out x.txt)

    frame = pd.DataFrame({"arch": keys})
    if space == "nb201":
        frame["arch_str"] = [nb201.to_string(k) for k in keys]
    frame["device"] = device
    frame["predicted_ms"] = saved["model"].predict(keys)
    with written_whole(out) as target:
        if out.suffix.lower() == ".parquet":
            frame.to_parquet(target, index=False)
        else:
            frame.to_csv(target, index=False)
    return out, len(frame)
