"""SAM's image encoder as segment-anything runs it, as geosam runs it, and in ONNX Runtime. Not part of the test run.

    python benchmarks/encoder.py                       # ViT-B (random weights), all cores
    python benchmarks/encoder.py --runs sam geosam --threads 1 --json encoder.json

One 1024² input (seeded noise: the encoder's cost does not depend on the pixels), each row in a fresh
process, one after the other:
  sam      mobile_sam's ``ImageEncoderViT`` as built (segment-anything's code, which samgeo runs)
  geosam   the encoder of ``TorchRuntime``: the same weights, attention in query chunks
  onnx     ONNX Runtime on geosam's export of that encoder (exported once beside the weights)
Columns: the first call and the best of ``--repeat``, resident memory after loading and at the peak
(the OS's VmRSS and VmHWM), and the largest difference of the output from the ``sam`` row's.
The weights are the seeded random ViT-B of benchmarks/versus_samgeo.py, with the relative-position
tables (zero in a fresh model) filled with seeded noise so that they count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("sam", "geosam", "onnx")


def memory_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", status)[1]) / 1024


def checkpoint() -> Path:
    """The seeded random ViT-B state dict, with noise in its relative-position tables (made once)."""
    import torch
    from versus_samgeo import WEIGHTS, random_vit_b

    path = WEIGHTS.with_name(WEIGHTS.stem + "_relpos.pt")
    if not path.exists():
        state = torch.load(random_vit_b(WEIGHTS), weights_only=True)
        generator = torch.Generator().manual_seed(0)
        for name, value in state.items():
            if ".rel_pos_" in name:
                state[name] = 0.5 * torch.randn(value.shape, generator=generator)
        torch.save(state, path)
    return path


def onnx_export(weights: Path):
    """geosam's ONNX export of ``weights`` (made once, beside them)."""
    from geosam.models.onnx import Export, export
    from geosam.models.torch import TorchRuntime

    target = Export.beside(weights)
    if not target.current("benchmark"):
        export(TorchRuntime.load("vit_b", weights), weights, "benchmark")
    return target


def encoder(run: str, weights: Path, threads: int):
    """A callable (B, 3, 1024, 1024) -> (B, 256, 64, 64) for ``run``."""
    import torch

    from geosam.models.checkpoints import read_state_dict
    from geosam.models.torch import TorchRuntime

    if run == "onnx":
        from geosam.models.onnx import OnnxRuntime

        target = onnx_export(weights)
        return OnnxRuntime(target.encoder, target.decoder, threads).encode
    if run == "geosam":
        return TorchRuntime.load("vit_b", weights).encode
    from geosam.models._mobile_sam import import_mobile_sam

    build_sam, _ = import_mobile_sam()
    sam = build_sam.build_sam_vit_b()
    sam.load_state_dict(read_state_dict(weights))
    image_encoder = sam.image_encoder.eval()
    return torch.inference_mode()(image_encoder)


def measure(run: str, weights: Path, threads: int, repeat: int, out: Path) -> dict:
    """One row, in this process."""
    import torch

    torch.set_num_threads(threads)
    call = encoder(run, weights, threads)
    loaded = memory_mb("VmRSS")
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        y = call(x)
        times.append(time.perf_counter() - start)
    torch.save(y, out)
    return {"run": run, "first_s": times[0], "best_s": min(times), "loaded_mb": loaded,
            "peak_mb": memory_mb("VmHWM")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and ORT threads")
    parser.add_argument("--repeat", type=int, default=2, help="encoder calls per row (the best counts)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # a child process: run this row
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    weights = checkpoint()
    if args.row:
        print(json.dumps(measure(args.row, weights, args.threads, args.repeat, args.out)))
        return

    import torch

    if "onnx" in args.runs:
        onnx_export(weights)  # here, so that the export's memory is not the row's
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            outputs[run] = Path(tmp) / f"{run}.pt"
            command = [sys.executable, __file__, "--row", run, "--out", str(outputs[run]),
                       "--threads", str(args.threads), "--repeat", str(args.repeat)]  # fmt: skip
            env = os.environ | {"PYTHONPATH": str(ROOT)}
            done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done {run}", file=sys.stderr)
        reference = torch.load(outputs["sam"]) if "sam" in outputs else None
        for row in rows:
            if reference is not None:
                row["max_diff"] = (torch.load(outputs[row["run"]]) - reference).abs().max().item()
    print(f"SAM ViT-B image encoder, one 1024² input, {args.threads} threads, {os.cpu_count()} cores")
    print(f"{'run':<7} {'first s':>8} {'best s':>7} {'loaded MiB':>11} {'peak MiB':>9} {'max |diff|':>11}")
    for r in rows:
        diff = f"{r['max_diff']:.1e}" if "max_diff" in r else "-"
        print(f"{r['run']:<7} {r['first_s']:>8.2f} {r['best_s']:>7.2f} {r['loaded_mb']:>11.0f} "
              f"{r['peak_mb']:>9.0f} {diff:>11}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
