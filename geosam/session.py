"""Prompt mode: a scene opened once, answering point and box prompts in map coordinates with polygons.

Each prompt group is answered on its own window (tiling.prompt_window): the window holds the whole
group, so no seam ever cuts it, and is read coarser when the group spans more than one model input.
Window embeddings are kept in memory and on disk (cache.py), so that asking again on the same part
of the scene runs only the mask decoder. Prompts are few: everything runs in this process, no Dask.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
from affine import Affine

from geosam.cache import EmbeddingCache, cache_key
from geosam.georef import Scene, area_m2, open_scene
from geosam.models import ModelSpec
from geosam.models.sam import Embedding
from geosam.prompts import PromptError, PromptGroup, frame_groups, parse_crs, read_prompts, reproject
from geosam.tiling import PromptWindow, prompt_window, read_pixels
from geosam.vectorize import mask_to_geometry, tidy, to_map

log = logging.getLogger(__name__)

COLUMNS = ["id", "score", "stability", "area_m2"]
MEMORY_WINDOWS = 4  # embeddings kept in memory for instant re-prompting


class Promptable(Protocol):
    """What prompt mode needs of a model (``SamModel`` is one)."""

    name: str
    checksum: str | None
    encoder_id: str  # what computes its embeddings: part of the cache's key
    image_size: int

    def embed(self, image: np.ndarray) -> Embedding: ...

    def prompt(
        self,
        embedding: Embedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, float]: ...


@dataclass(frozen=True)
class Skipped:
    """A prompt group that was not answered, and why."""

    id: Any
    reason: str

    def __str__(self) -> str:
        return f"prompt {self.id}: {self.reason}"


@dataclass
class WindowImage:
    """A window's pixels as read for the model, with where they lie."""

    window: PromptWindow
    image: np.ndarray  # uint8 (H, W, 3)
    valid: np.ndarray  # bool (H, W)
    transform: Affine  # image pixel -> scene CRS


class Session:
    """Open a scene once, then ask for objects at points and boxes in map coordinates.

    >>> session = Session("scene.tif")
    >>> session.predict(points=[(x, y)])                 # one object from one or more points
    >>> session.predict(boxes=[(xmin, ymin, xmax, ymax), ...])  # one object per box
    >>> session.predict(prompts="fields.gpkg", id_field="field_id")

    ``model`` is an installed model's name, a ``ModelSpec`` or a loaded model; ``cache`` an
    ``EmbeddingCache``, a folder, True (the default folder) or False (memory only).
    ``decode_threads`` is the torch threads the mask decoder runs on (None, the default: torch's
    setting, all cores; 1 keeps a prompt off the other cores of a busy machine).
    The other keywords plan how the scene is read, as in ``geosam.open_scene``.
    """

    def __init__(
        self,
        path: str | Path | Scene,
        model: str | ModelSpec | Promptable = "mobile_sam",
        *,
        cache: EmbeddingCache | str | Path | bool = True,
        bands: tuple[int | str, ...] | None = None,
        percentiles: tuple[float, float] = (2.0, 98.0),
        stretch_8bit: bool = False,
        resolution: float | None = None,
        pixel_coordinates: bool = False,
        decode_threads: int | None = None,
    ) -> None:
        self.decode_threads = decode_threads
        if isinstance(model, (str, ModelSpec)):
            spec = ModelSpec(model) if isinstance(model, str) else model
            spec.check()
        self.scene = (
            path
            if isinstance(path, Scene)
            else open_scene(
                path,
                bands=bands,
                percentiles=percentiles,
                stretch_8bit=stretch_8bit,
                resolution=resolution,
                pixel_coordinates=pixel_coordinates,
            )
        )
        if isinstance(model, (str, ModelSpec)):
            from geosam.models import load_model

            model = load_model(spec)
        self.model: Promptable = model
        if cache is True:
            cache = EmbeddingCache()
        elif cache is False:
            cache = None
        elif not isinstance(cache, EmbeddingCache):
            cache = EmbeddingCache(cache)
        self.cache: EmbeddingCache | None = cache
        self._embeddings: OrderedDict[PromptWindow, tuple[Embedding, WindowImage]] = OrderedDict()
        self.encoded = 0  # windows run through the image encoder by this session

    @property
    def crs(self):
        return self.scene.crs

    def predict(
        self,
        points: Sequence[tuple[float, float]] | None = None,
        labels: Sequence[int] | None = None,
        boxes: Sequence[tuple[float, float, float, float]] | None = None,
        *,
        prompts: str | Path | gpd.GeoDataFrame | Sequence[PromptGroup] | None = None,
        crs: Any = None,
        id_field: str | None = None,
        label_field: str | None = None,
        layer: str | int | None = None,
    ) -> gpd.GeoDataFrame:
        """Polygons, one per prompt group, in the scene's CRS.

        ``points`` (with ``labels``: 1 inside, 0 outside; default all inside) make one object; each
        of ``boxes`` is one object, or, when there is one box, one object together with the points.
        ``prompts`` is a vector file, a GeoDataFrame or a list of ``PromptGroup`` values instead.
        ``crs`` is the CRS of ``points``/``boxes``/``PromptGroup`` values (default: the scene's).
        Prompts that cannot be answered (outside the scene, on nodata, no object found) are listed
        in the result's ``attrs["skipped"]`` and logged as warnings.
        """
        groups = self._groups(points, labels, boxes, prompts, crs, id_field, label_field, layer)
        rows, skipped = [], []
        for group in groups:
            answer = self.answer(group)
            if isinstance(answer, Skipped):
                log.warning("%s", answer)
                skipped.append(answer)
            else:
                rows.append(answer)
        frame = self._frame(groups, rows)
        frame.attrs["skipped"] = skipped
        return frame

    def _groups(self, points, labels, boxes, prompts, crs, id_field, label_field, layer) -> list[PromptGroup]:
        if prompts is not None:
            if points is not None or boxes is not None:
                raise PromptError("give prompts, or points and boxes, not both")
            if isinstance(prompts, (str, Path)):
                groups, source = read_prompts(
                    prompts, layer=layer, id_field=id_field, label_field=label_field
                )
            elif isinstance(prompts, gpd.GeoDataFrame):
                groups, source = (
                    frame_groups(prompts, id_field=id_field, label_field=label_field),
                    prompts.crs,
                )
            else:
                groups, source = list(prompts), crs
            return self._to_scene(groups, source)
        points = [tuple(map(float, p)) for p in points or ()]
        boxes = [tuple(map(float, b)) for b in boxes or ()]
        if labels is None:
            labels = [1] * len(points)
        if len(labels) != len(points):
            raise PromptError(f"{len(labels)} labels for {len(points)} points: give one label per point")
        if not points and not boxes:
            raise PromptError("no prompts: give points, boxes or a prompt file")
        if points and len(boxes) > 1:
            raise PromptError(
                "points go with one box at most: call predict once per box, or use a prompt file"
            )
        labels = tuple(int(v) for v in labels)
        if boxes:
            groups = [PromptGroup(i + 1, (), (), b) for i, b in enumerate(boxes)]
            if points:
                groups = [PromptGroup(1, tuple(points), labels, boxes[0])]
        else:
            groups = [PromptGroup(1, tuple(points), labels)]
        return self._to_scene(groups, crs)

    def _to_scene(self, groups: list[PromptGroup], crs) -> list[PromptGroup]:
        if crs is not None and self.scene.crs is None:
            raise PromptError(f"{self.scene.path} has no CRS: prompts in a CRS need a georeferenced scene")
        return reproject(groups, _crs(crs), self.scene.crs)

    def answer(self, group: PromptGroup) -> dict | Skipped:
        """One group's polygon (in the scene CRS) with its score, or why it was skipped."""
        scene = self.scene
        inverse = ~scene.transform
        xs, ys = [], []
        for x, y in group.points:
            col, row = inverse @ (x, y)
            xs.append(col)
            ys.append(row)
            if not (0 <= col < scene.width and 0 <= row < scene.height):
                return Skipped(group.id, f"point {x:.10g},{y:.10g} is outside the scene {_bounds(scene)}")
        pixel_box = None
        if group.box is not None:
            corners = np.array([inverse @ xy for xy in _corners(group.box)])
            c0, r0 = corners.min(axis=0)
            c1, r1 = corners.max(axis=0)
            c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, scene.width), min(r1, scene.height)
            if not (c0 < c1 and r0 < r1):
                return Skipped(group.id, f"box {_fmt(group.box)} is outside the scene {_bounds(scene)}")
            pixel_box = (c0, r0, c1, r1)  # clipped to the scene
            xs += [c0, c1]
            ys += [r0, r1]
        window = prompt_window(
            scene.width, scene.height, (min(xs), min(ys), max(xs), max(ys)), self.model.image_size
        )
        embedding, pixels = self.embedding(window)
        to_image = ~pixels.transform
        points = labels = box = None
        if group.points:
            # pixel index coordinates (SAM's convention: a pixel's centre is at its index + 0.5)
            points = np.array([to_image @ xy for xy in group.points], np.float32) - 0.5
            labels = np.array(group.labels)
            rows_, cols_ = pixels.valid.shape
            for (x, y), (col, row), label in zip(group.points, points + 0.5, labels):
                r, c = min(int(row), rows_ - 1), min(int(col), cols_ - 1)
                if label == 1 and not pixels.valid[r, c]:
                    return Skipped(group.id, f"point {x:.10g},{y:.10g} is on nodata")
        if pixel_box is not None:
            box = _image_box(pixel_box, window, pixels.valid.shape)
            x0, y0, x1, y1 = (int(v) for v in box)
            if not pixels.valid[y0 : y1 + 1, x0 : x1 + 1].any():
                return Skipped(group.id, f"box {_fmt(group.box)} holds only nodata")
        with _threads(self.decode_threads):
            mask, score, stability = self.model.prompt(embedding, points, labels, box)
        mask &= pixels.valid
        if not mask.any():
            return Skipped(group.id, "the model found no object there")
        geometry = tidy(np.array([mask_to_geometry(mask, (0, 0))], dtype=object), 0.0)
        geometry = to_map(geometry, pixels.transform)[0]
        return {"group": group, "score": score, "stability": stability, "geometry": geometry}

    def embedding(self, window: PromptWindow) -> tuple[Embedding, WindowImage]:
        """The window's embedding and pixels: from memory, from the disk cache, or from the encoder."""
        if window in self._embeddings:
            self._embeddings.move_to_end(window)
            return self._embeddings[window]
        pixels = self.read(window)
        model = self.model
        key = (
            cache_key(self.scene, window, model.name, model.checksum, model.encoder_id)
            if self.cache
            else None
        )
        stored = self.cache.get(key) if key is not None else None
        if stored is not None:
            embedding = stored[0]
        else:
            embedding = self.model.embed(pixels.image)
            self.encoded += 1
            if key is not None:
                self.cache.put(key, embedding, pixels.transform)
        self._embeddings[window] = (embedding, pixels)
        while len(self._embeddings) > MEMORY_WINDOWS:
            self._embeddings.popitem(last=False)
        return embedding, pixels

    def read(self, window: PromptWindow) -> WindowImage:
        """A window's pixels, decimated when its factor is above 1."""
        out_shape = None if window.factor == 1 else window.shape
        image, valid = read_pixels(self.scene, window.box, out_shape, what=f"window {window.box}")
        return WindowImage(window, image, valid, window.transform(self.scene.transform))

    def _frame(self, groups: Sequence[PromptGroup], rows: list[dict]) -> gpd.GeoDataFrame:
        geometry = np.array([r["geometry"] for r in rows], dtype=object)
        if self.scene.crs is not None:
            area = area_m2(geometry, self.scene.crs)
        else:
            area = np.array([g.area for g in geometry], float)
        fields: list[str] = []
        for g in groups:
            fields += [f for f in g.attributes if f not in fields]
        columns: dict[str, Any] = {
            "id": pd.Series([r["group"].id for r in rows], dtype=_id_dtype(groups)),
            "score": np.array([r["score"] for r in rows], np.float64),
            "stability": np.array([r["stability"] for r in rows], np.float64),
            "area_m2": np.asarray(area, np.float64),
        }
        for f in fields:
            columns[f] = pd.Series([r["group"].attributes.get(f) for r in rows], dtype=object).infer_objects()
        return gpd.GeoDataFrame(columns, geometry=list(geometry), crs=self.scene.crs)


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _crs(value):
    if value is None:
        return None
    return parse_crs(value) if isinstance(value, str) else value


def _id_dtype(groups: Sequence[PromptGroup]) -> str:
    return "int64" if all(isinstance(g.id, int) for g in groups) else "object"


def _corners(box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _image_box(pixel_box, window: PromptWindow, shape: tuple[int, int]) -> np.ndarray:
    """A box in scene pixels (x0, y0, x1, y1, continuous) as SAM box coordinates in the window image.

    SAM boxes run from the first to the last pixel index the object covers, so the continuous
    right and bottom edges lose one pixel.
    """
    rows, cols = shape
    sx, sy = window.box.width / cols, window.box.height / rows
    x0 = (pixel_box[0] - window.box.x0) / sx
    y0 = (pixel_box[1] - window.box.y0) / sy
    x1 = (pixel_box[2] - window.box.x0) / sx - 1
    y1 = (pixel_box[3] - window.box.y0) / sy - 1
    return np.array(
        [
            np.clip(x0, 0, cols - 1),
            np.clip(y0, 0, rows - 1),
            np.clip(x1, 0, cols - 1),
            np.clip(y1, 0, rows - 1),
        ],
        np.float32,
    )


def _bounds(scene: Scene) -> str:
    return "(" + _fmt(scene.bounds) + ")"


def _fmt(values) -> str:
    return ",".join(f"{v:.10g}" for v in values)
