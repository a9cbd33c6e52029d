"""Prompt mode: a scene opened once, answering point and box prompts in map coordinates with polygons.

Each prompt group is answered on its own window (tiling.prompt_window): the window holds the whole
group, so no seam ever cuts it, and is read coarser when the group spans more than one model input.
Window embeddings are kept in memory and on disk (cache.py), so that asking again on the same part
of the scene runs only the mask decoder. Prompts are few: everything runs in this process, no Dask.
"""

from __future__ import annotations

import logging
import typing
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine

from geosam import outlines
from geosam.cache import EmbeddingCache, cache_key
from geosam.georef import Scene, area_m2, open_scene, pixel_area_m2
from geosam.models import ModelSpec
from geosam.models.base import Embedding
from geosam.prompts import (
    PromptError,
    PromptGroup,
    argument_groups,
    frame_groups,
    parse_crs,
    read_prompts,
    reproject,
)
from geosam.settings import MODEL, OUTLINES, READ, OutlineKind, Outlines
from geosam.tiling import PromptWindow, prompt_window, read_pixels
from geosam.vectorize import mask_to_geometry, tidy, to_map, to_pixels

log = logging.getLogger(__name__)

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

    Each prompt group is answered on a window that holds it whole; window embeddings are kept in
    memory and in the cache, so asking again near an earlier prompt runs only the mask decoder.
    Everything runs in this process.

    Examples:
        >>> session = Session("scene.tif")
        >>> session.predict(points=[(x, y)])                 # one object from one or more points
        >>> session.predict(boxes=[(xmin, ymin, xmax, ymax), ...])  # one object per box
        >>> session.predict(prompts="fields.gpkg", id_field="field_id")

    Args:
        path: Any GDAL raster path, or a ``Scene`` already opened (the read keywords are then
            ignored).
        model: An installed model's name, a ``ModelSpec`` or a loaded model (default: the
            settings' model).
        cache: An ``EmbeddingCache``, a folder, True (the default folder) or False (memory only).
        bands: As in ``geosam.open_scene``.
        percentiles: As in ``geosam.open_scene``.
        stretch_8bit: As in ``geosam.open_scene``.
        resolution: As in ``geosam.open_scene``.
        pixel_coordinates: As in ``geosam.open_scene``.
        nodata: As in ``geosam.open_scene``.
        decode_threads: The torch threads the mask decoder runs on (None, the default: torch's
            setting, all cores; 1 keeps a prompt off the other cores of a busy machine).

    Attributes:
        scene: The scene opened, as ``open_scene`` returns it.
        model: The loaded model.
        cache: The embedding cache on disk, or None (memory only).
        encoded: Windows this session has run through the image encoder (not taken from a cache).

    Raises:
        ModelError: The model is unknown, not installed or cannot be loaded.
        SceneNotFoundError: ``path`` does not exist.
        InputError: The scene cannot be used as given (see ``open_scene``).
    """

    def __init__(
        self,
        path: str | Path | Scene,
        model: str | ModelSpec | Promptable = MODEL.name,
        *,
        cache: EmbeddingCache | str | Path | bool = True,
        bands: tuple[int | str, ...] | None = READ.bands,
        percentiles: tuple[float, float] = READ.percentiles,
        stretch_8bit: bool = READ.stretch_8bit,
        resolution: float | None = READ.resolution,
        pixel_coordinates: bool = READ.pixel_coordinates,
        nodata: float | None = READ.nodata,
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
                nodata=nodata,
            )
        )
        if isinstance(model, (str, ModelSpec)):
            from geosam.models import load_model

            self.model: Promptable = typing.cast(Promptable, load_model(spec))  # a SamModel
        else:
            self.model = model
        self.cache: EmbeddingCache | None = (
            (EmbeddingCache() if cache is True else None)
            if isinstance(cache, bool)
            else cache
            if isinstance(cache, EmbeddingCache)
            else EmbeddingCache(cache)
        )
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
        outline: str = OUTLINES.outline,
        fill_holes: float = OUTLINES.fill_holes,
        flat: bool = OUTLINES.flat,
        keep_raw: bool = OUTLINES.keep_raw,
    ) -> gpd.GeoDataFrame:
        """Polygons, one per prompt group, in the scene's CRS.

        ``points`` (with ``labels``: 1 inside, 0 outside; default all inside) make one object; each
        of ``boxes`` is one object, or, when there is one box, one object together with the points.
        ``prompts`` is a vector file, a GeoDataFrame or a list of ``PromptGroup`` values instead.
        ``crs`` is the CRS of ``points``/``boxes``/``PromptGroup`` values (default: the scene's).
        Prompts that cannot be answered (outside the scene, on nodata, no object found) are listed
        in the result's ``attrs["skipped"]`` and logged as warnings.

        Args:
            points: (x, y) points of one object.
            labels: One per point: 1 inside the object, 0 outside (default: all inside).
            boxes: (xmin, ymin, xmax, ymax) boxes, one object each; one box can go with ``points``.
            prompts: A vector file, a GeoDataFrame or ``PromptGroup`` values, instead of ``points``
                and ``boxes``.
            crs: The CRS of ``points``, ``boxes`` or ``PromptGroup`` values: a CRS, or text such
                as ``EPSG:4326``, WKT or PROJ (default: the scene's). Files and GeoDataFrames
                bring their own.
            id_field: The field grouping a file's or GeoDataFrame's features into one object
                (default: one object each).
            label_field: The field marking points positive (1, true, fg) or negative (0, false, bg)
                (default: ``label`` where there is one).
            layer: The prompt file's layer, by name or index (default: the first).
            outline: The kind of outline (``geosam.outlines``): pixel, simplify, smooth, orthogonal,
                orthogonal45, circle or auto.
            fill_holes: Fill holes smaller than this many m² (pixels² without a CRS).
            flat: Resolve overlaps between the objects: the smaller keeps the area.
            keep_raw: Add the pixel outlines as column ``raw_geometry`` (written as layer ``objects_raw``).

        Returns:
            One row per prompt group answered: ``id``, ``score`` (predicted IoU), ``stability``,
                ``area_m2``, the prompts' own fields, ``outline``, ``outline_iou``, ``vertices_raw``,
                ``vertices`` and the polygon, in the scene's CRS; the groups skipped (``Skipped``: id
                and reason) in ``attrs["skipped"]``.

        Raises:
            PromptError: An ``InputError``: no prompts, both ``prompts`` and points or boxes,
                labels that do not match the points, points with more than one box, a prompt file
                that cannot be used, a ``crs`` that is none, a CRS given for a scene without one,
                or prompts that cannot be placed in the scene's CRS.
            InputError: Pixels of the scene cannot be read.
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
        shape = Outlines(typing.cast(OutlineKind, outline), fill_holes, flat, keep_raw)
        frame = self._outlined(self._frame(groups, rows), shape)
        frame.attrs["skipped"] = skipped
        return frame

    def _groups(self, points, labels, boxes, prompts, crs, id_field, label_field, layer) -> list[PromptGroup]:
        if prompts is None:
            return self._to_scene(argument_groups(points, labels, boxes), crs)
        if points is not None or boxes is not None:
            raise PromptError("give prompts, or points and boxes, not both")
        if isinstance(prompts, (str, Path)):
            groups, source = read_prompts(prompts, layer=layer, id_field=id_field, label_field=label_field)
        elif isinstance(prompts, gpd.GeoDataFrame):
            groups = frame_groups(prompts, id_field=id_field, label_field=label_field)
            source = prompts.crs
        else:
            groups, source = list(prompts), crs
        return self._to_scene(groups, source)

    def _to_scene(self, groups: list[PromptGroup], crs) -> list[PromptGroup]:
        if crs is not None and self.scene.crs is None:
            raise PromptError(f"{self.scene.path} has no CRS: prompts in a CRS need a georeferenced scene")
        return reproject(groups, _crs(crs), self.scene.crs)

    def answer(self, group: PromptGroup) -> dict | Skipped:
        """One group's polygon (in the scene CRS) with its score, or why it was skipped.

        Args:
            group: The prompts of one object, in the scene's CRS.

        Returns:
            A dict of ``group``, ``score``, ``stability`` and ``geometry``, or a ``Skipped`` (the
                group's id and the reason) when the prompts are outside the scene or on nodata, or the
                model found no object there.

        Raises:
            InputError: Pixels of the scene cannot be read.
        """
        placed = self._place(group)
        if isinstance(placed, Skipped):
            return placed
        xs, ys, pixel_box = placed
        window = prompt_window(
            self.scene.width, self.scene.height, (min(xs), min(ys), max(xs), max(ys)), self.model.image_size
        )
        embedding, pixels = self.embedding(window)
        asked = _image_prompts(group, pixel_box, window, pixels)
        if isinstance(asked, Skipped):
            return asked
        with _threads(self.decode_threads):
            mask, score, stability = self.model.prompt(embedding, *asked)
        mask &= pixels.valid
        if not mask.any():
            return Skipped(group.id, "the model found no object there")
        geometry = tidy(np.array([mask_to_geometry(mask, (0, 0))], dtype=object), 0.0)
        geometry = to_map(geometry, pixels.transform)[0]
        return {"group": group, "score": score, "stability": stability, "geometry": geometry}

    def _place(self, group: PromptGroup) -> tuple[list[float], list[float], tuple | None] | Skipped:
        """The group's points and box in scene pixels (the box clipped to the scene), or why not."""
        scene = self.scene
        inverse = ~scene.transform
        xs, ys = [], []
        for x, y in group.points:
            col, row = inverse @ (x, y)
            xs.append(col)
            ys.append(row)
            if not (0 <= col < scene.width and 0 <= row < scene.height):
                return Skipped(group.id, f"point {x:.10g},{y:.10g} is outside the scene {_bounds(scene)}")
        if group.box is None:
            return xs, ys, None
        corners = np.array([inverse @ xy for xy in _corners(group.box)])
        c0, r0 = corners.min(axis=0)
        c1, r1 = corners.max(axis=0)
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, scene.width), min(r1, scene.height)
        if not (c0 < c1 and r0 < r1):
            return Skipped(group.id, f"box {_fmt(group.box)} is outside the scene {_bounds(scene)}")
        return [*xs, c0, c1], [*ys, r0, r1], (c0, r0, c1, r1)

    def embedding(self, window: PromptWindow) -> tuple[Embedding, WindowImage]:
        """The window's embedding and pixels: from memory, from the disk cache, or from the encoder."""
        if window in self._embeddings:
            self._embeddings.move_to_end(window)
            return self._embeddings[window]
        pixels = self.read(window)
        model = self.model
        cache = self.cache
        key = cache_key(self.scene, window, model.name, model.checksum, model.encoder_id) if cache else None
        stored = cache.get(key) if cache is not None and key is not None else None
        if stored is not None:
            embedding = stored[0]
        else:
            embedding = self.model.embed(pixels.image)
            self.encoded += 1
            if cache is not None and key is not None:
                cache.put(key, embedding, pixels.transform)
        self._embeddings[window] = (embedding, pixels)
        while len(self._embeddings) > MEMORY_WINDOWS:
            self._embeddings.popitem(last=False)
        return embedding, pixels

    def read(self, window: PromptWindow) -> WindowImage:
        """A window's pixels, decimated when its factor is above 1."""
        out_shape = None if window.factor == 1 else window.shape
        image, valid = read_pixels(self.scene, window.box, out_shape, what=f"window {window.box}")
        return WindowImage(window, image, valid, window.transform(self.scene.transform))

    def _outlined(self, frame: gpd.GeoDataFrame, shape: Outlines) -> gpd.GeoDataFrame:
        """The frame's objects with the outlines ``shape`` asks for and their measures (``geosam.outlines``)."""
        transform = self.scene.transform
        pixels = to_pixels(np.asarray(frame.geometry.values, dtype=object), transform)
        geometry, measures = outlines.apply(pixels, transform, pixel_area_m2(self.scene), shape)
        for name, values in measures.items():  # before the geometry, as automatic mode's
            frame.insert(len(frame.columns) - 1, name, values)
        if (
            shape.outline != "pixel" or shape.fill_holes or shape.flat
        ):  # else the answers' own polygons, as they were
            frame = frame.set_geometry(list(geometry), crs=self.scene.crs)
            if self.scene.crs is not None:
                frame["area_m2"] = area_m2(geometry, self.scene.crs)
            else:
                frame["area_m2"] = np.abs(shapely.area(geometry)) / abs(transform.determinant)
        return frame[~frame.geometry.is_empty].reset_index(drop=True)

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


def _image_prompts(
    group: PromptGroup, pixel_box: tuple | None, window: PromptWindow, pixels: WindowImage
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None] | Skipped:
    """The group's points, labels and box in the window image's pixels, or why it cannot be asked."""
    points = labels = box = None
    if group.points:
        # pixel index coordinates (SAM's convention: a pixel's centre is at its index + 0.5)
        to_image = ~pixels.transform
        points = np.array([to_image @ xy for xy in group.points], np.float32) - 0.5
        labels = np.array(group.labels)
        rows, cols = pixels.valid.shape
        for (x, y), (col, row), label in zip(group.points, points + 0.5, labels, strict=True):
            r, c = min(int(row), rows - 1), min(int(col), cols - 1)
            if label == 1 and not pixels.valid[r, c]:
                return Skipped(group.id, f"point {x:.10g},{y:.10g} is on nodata")
    if pixel_box is not None:
        box = _image_box(pixel_box, window, pixels.valid.shape)
        x0, y0, x1, y1 = (int(v) for v in box)
        if not pixels.valid[y0 : y1 + 1, x0 : x1 + 1].any():
            return Skipped(group.id, f"box {_fmt(group.box)} holds only nodata")
    return points, labels, box
