"""geosam's automatic mode against the plain 32×32 grid as segment-anything runs it, on real imagery.

    python benchmarks/automatic.py                       # three tiles of ../shared/data
    python benchmarks/automatic.py --tiles naip --json automatic.json

The plain grid: every point of the 32×32 grid (nodata or not) decoded by SAM's own decoder graph in
batches of 64, every mask upsampled to the tile, filtered by predicted IoU and stability at full
resolution, then box NMS: the steps of segment-anything's SamAutomaticMaskGenerator, with geosam's
thresholds. Each geosam mode runs on the same embedding with the same thresholds. Per tile and mode:
  seconds   encoder + decoding + post-processing (the encoder, timed once, counted for each)
  masks     masks kept
  recall    share of the plain grid's masks that a mask of the mode matches at IoU >= 0.8
Not part of the test run; times only compare within one run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data"
TILES = {  # name: (source, what it is)
    "naip": ("m_4709963_se_14_1_20200831.tif", "NAIP 5 m RGB, a 1024² window of a mosaic of the scene"),
    "drone": ("pix4d_alpha_nodata.tif", "drone orthomosaic 0.35 m, alpha-band nodata"),
    "landsat": ("RGB.byte.tif", "Landsat RGB 300 m, nodata collar"),
}
MATCH_IOU = 0.8


def tile_source(name: str, folder: Path) -> tuple[Path, Window | None]:
    """The file holding the named tile (NAIP's mosaic written to ``folder``) and its window (None: all)."""
    from geosam.testing import mosaic

    source = DATA / TILES[name][0]
    if name != "naip":
        return source, None
    naip = mosaic(folder / "naip-mosaic.tif", 2048, [source, DATA / "m_4709963_se_14_1_20090818.tif"])
    return naip, Window(512, 512, 1024, 1024)


def read_tile(name: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 H×W×3 pixels and the valid-pixel mask of the named tile."""
    source, window = tile_source(name, folder)
    with rasterio.open(source) as src:
        image = src.read([1, 2, 3], window=window).transpose(1, 2, 0)
        valid = src.dataset_mask(window=window) > 0
    return np.ascontiguousarray(image), valid


@torch.inference_mode()
def plain_grid(model, embedding, valid: np.ndarray) -> np.ndarray:
    """segment-anything's automatic mask generator on ``embedding``: masks (N, H, W) after NMS."""
    from geosam.models._mobile_sam import import_mobile_sam
    from geosam.models.automatic import box_nms

    _, amg = import_mobile_sam()
    params = model.params
    h, w = valid.shape
    points = (amg.build_point_grid(params.points_per_side) * np.array([w, h])).astype(np.float32)
    scale = np.array([embedding.input_size[1] / w, embedding.input_size[0] / h], np.float32)
    packed, scores, boxes = [], [], []
    for start in range(0, len(points), 64):
        batch = points[start : start + 64]
        coords = np.concatenate([batch[:, None] * scale, np.zeros((len(batch), 1, 2), np.float32)], 1)
        labels = np.tile(np.array([1, -1], np.float32), (len(batch), 1))
        low_res, iou = model.runtime.decoder(
            embedding.features, torch.from_numpy(coords), torch.from_numpy(labels)
        )
        logits = model.upscale(embedding, low_res[:, 1:].flatten(0, 1))
        iou = iou[:, 1:].flatten()
        stable = amg.calculate_stability_score(logits, 0.0, params.stability_score_offset)
        keep = (iou >= params.pred_iou_thresh) & (stable >= params.stability_score_thresh)
        binary = logits[keep] > 0
        packed += [np.packbits(m) for m in binary.numpy()]
        scores.append(iou[keep])
        boxes.append(amg.batched_mask_to_box(binary))
    kept = box_nms(torch.cat(boxes), torch.cat(scores), params.box_nms_thresh).numpy()
    masks = np.stack([np.unpackbits(packed[i], count=h * w).reshape(h, w).astype(bool) for i in kept])
    masks &= valid
    return masks[masks.reshape(len(masks), -1).any(1)]


def recall(reference: np.ndarray, found: np.ndarray) -> float:
    """Share of ``reference`` masks that some mask of ``found`` matches at IoU >= MATCH_IOU."""
    if len(reference) == 0:
        return 1.0
    if len(found) == 0:
        return 0.0
    a = torch.from_numpy(reference.reshape(len(reference), -1)).float()
    b = torch.from_numpy(found.reshape(len(found), -1)).float()
    inter = a @ b.T
    iou = inter / (a.sum(1)[:, None] + b.sum(1)[None] - inter).clamp(min=1)
    return float((iou.max(1).values >= MATCH_IOU).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", nargs="+", choices=list(TILES), default=list(TILES))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from geosam.models import AutomaticParams, ModelSpec, load_model
    from geosam.models.automatic import generate

    torch.set_num_threads(args.threads)
    model = load_model(ModelSpec("mobile_sam", backend="torch"))
    modes = {"geosam default": AutomaticParams()}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.tiles:
            image, valid = read_tile(name, Path(folder))
            start = time.perf_counter()
            embedding = model.embed(image)
            encoder = time.perf_counter() - start
            start = time.perf_counter()
            reference = plain_grid(model, embedding, valid)
            rows.append({"tile": name, "mode": "plain grid (SAM)", "seconds": encoder + time.perf_counter() - start,
                         "masks": len(reference), "recall": 1.0})  # fmt: skip
            for mode, params in modes.items():
                start = time.perf_counter()
                with torch.inference_mode():
                    masks = generate(model, image, valid, params, embedding)
                seconds = encoder + time.perf_counter() - start
                rows.append({"tile": name, "mode": mode, "seconds": seconds, "masks": len(masks),
                             "recall": recall(reference, masks.masks)})  # fmt: skip
            print(f"done {name}", file=sys.stderr)
    print(f"mobile_sam, {args.threads} threads, {os.cpu_count()} cores; recall at IoU >= {MATCH_IOU}")
    print(f"{'tile':<8} {'mode':<17} {'seconds':>8} {'ratio':>6} {'masks':>6} {'recall':>7}")
    plain = {r["tile"]: r["seconds"] for r in rows if r["mode"].startswith("plain")}
    for r in rows:
        r["time_ratio"] = r["seconds"] / plain[r["tile"]]
        print(f"{r['tile']:<8} {r['mode']:<17} {r['seconds']:>8.1f} {r['time_ratio']:>6.2f} {r['masks']:>6} "
              f"{r['recall']:>7.3f}")  # fmt: skip
    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "threads": args.threads, "torch": torch.__version__, "tiles": {t: TILES[t] for t in args.tiles}}  # fmt: skip
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
