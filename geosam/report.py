"""A run's report: what was planned, reused, done and failed, how fast, in how much memory, and how.

The same record goes three ways: a JSON file, a short summary printed at the end of the run, and
the output layer's GeoPackage metadata (``GEOSAM_*`` items, the whole report as JSON in
``GEOSAM_RUN_REPORT``), so that a layer found on a shared drive says how it was made.
"""

from __future__ import annotations

import json
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

LIBRARIES = ("dask", "distributed", "torch", "rasterio", "shapely", "pyogrio", "geopandas", "pyproj", "numpy")


def versions() -> dict[str, str | None]:
    """geosam's, Python's, GDAL's, GEOS's and the main libraries' versions (without importing torch)."""
    import rasterio
    import shapely

    from geosam._version import __version__

    found: dict[str, str | None] = {"geosam": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["gdal"] = rasterio.__gdal_version__
    found["geos"] = shapely.geos_version_string
    return found


@dataclass
class TileFailure:
    row: int
    col: int
    error: str


@dataclass
class RunReport:
    """Everything about one run of ``geosam segment``; ``to_json`` and ``summary`` present it."""

    scene: str
    scene_size_px: tuple[int, int]  # width, height of the grid tiles are cut from
    crs: str | None
    model: str
    model_sha256: str | None
    parameters: dict
    run_key: str | None = None
    work_dir: str | None = None
    output: str | None = None
    status: str = "running"  # running, complete, partial (failed tiles left out), failed
    tiles_planned: int = 0
    tiles_skipped: int = 0  # reused from the work folder of an earlier, interrupted run
    tiles_done: int = 0  # segmented (or found without valid pixels) in this run
    tiles_empty: int = 0  # of planned tiles: no valid pixels, nothing to segment
    tiles_failed: int = 0
    failed: list[TileFailure] = field(default_factory=list)
    objects: int = 0
    ground: int = 0  # objects left out as the scene's ground (geosam.objectstore.ObjectStore.finish)
    masks: dict[str, int] = field(
        default_factory=dict
    )  # of the tiles segmented in this run: geosam.models.base.Funnel
    advice: list[str] = field(default_factory=list)  # why there are no objects; pixels too fine or coarse
    prompts: int = 0  # point prompts put to tiles about objects their neighbours saw (geosam.reprompt)
    classes: dict[str, int] = field(default_factory=dict)  # objects written per class (with classes)
    sources: dict[str, int] = field(
        default_factory=dict
    )  # objects per prompts that found them (Piece.source)
    class_model: str | None = None  # the class model file learnt from --examples, or read with --class-model
    prompt_pieces: int = 0  # pieces the prompts found
    area_km2: float | None = None  # area of the scene's valid pixels (in tile cores), reused or done
    area_km2_this_run: float | None = None  # the same, in the tiles segmented in this run
    wall_s: float = 0.0
    model_s: float = 0.0  # seconds workers spent in the model (tiles and prompt answers) in this run
    km2_per_hour: float | None = None  # area_km2_this_run / wall time
    outlines_s: float = 0.0  # seconds spent turning pixel outlines into the --outline kind, with its measures
    workers: int = 0
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)  # per worker process (see peak_rss)
    client_peak_rss_bytes: int = 0
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    finished: str | None = None
    host: str = field(default_factory=socket.gethostname)
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    versions: dict = field(default_factory=versions)

    def finish(self, wall_s: float) -> None:
        self.wall_s = round(wall_s, 3)
        self.model_s = round(self.model_s, 3)
        self.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.tiles_failed = len(self.failed)
        if self.area_km2_this_run is not None and wall_s > 0:
            self.km2_per_hour = self.area_km2_this_run / (wall_s / 3600)
        self.client_peak_rss_bytes = peak_rss()

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def layer_metadata(self) -> dict[str, str]:
        """How the layer was made, in short: shown by ``ogrinfo`` and QGIS's layer properties."""
        return {
            "GEOSAM_VERSION": str(self.versions.get("geosam")),
            "GEOSAM_MODEL": self.model,
            "GEOSAM_MODEL_SHA256": self.model_sha256 or "",
            "GEOSAM_SCENE": self.scene,
            "GEOSAM_STARTED": self.started,
            "GEOSAM_STATUS": self.status,
            "GEOSAM_RUN_REPORT": self.to_json(),
        }

    def write(self, path: Path) -> None:
        """Write the JSON report atomically."""
        from geosam.atomic import write_bytes

        write_bytes(path, (self.to_json() + "\n").encode())

    def summary(self) -> str:
        """A few lines for the end of a run."""
        area = "n/a (pixel coordinates)" if self.area_km2 is None else f"{self.area_km2:.3f} km²"
        speed = "" if self.km2_per_hour is None else f", {self.km2_per_hour:.2f} km²/h"
        peak = max(self.peak_rss_bytes.values(), default=0)
        lines = [
            (
                f"tiles: {self.tiles_planned} planned, {self.tiles_skipped} reused, {self.tiles_done} done, "
                f"{self.tiles_failed} failed ({self.tiles_empty} without valid pixels)"
            ),
            f"objects: {self.objects} over {area}; {self.wall_s:.1f} s ({self.model_s:.1f} s in the model){speed}",
            (
                f"memory: peak {peak / 2**20:.0f} MiB per worker "
                f"({self.workers} worker{'s' if self.workers != 1 else ''}), "
                f"client {self.client_peak_rss_bytes / 2**20:.0f} MiB"
            ),
            f"model: {self.model} sha256 {(self.model_sha256 or 'n/a')[:12]}; geosam {self.versions.get('geosam')}",
        ]
        if self.ground:
            lines.append(f"left out {self.ground} object{'s' if self.ground != 1 else ''} over more than half of the "
                         "scene and across it, its ground (--keep-background keeps them)")  # fmt: skip
        if self.classes:
            shown = ", ".join(f"{n} {c}" for c, n in self.classes.items())
            found = ", ".join(f"{n} {s}" for s, n in self.sources.items())
            lines.append(f"classes: {shown} (found by: {found})")
        lines.extend(self.advice)
        for failure in self.failed[:5]:
            lines.append(f"failed tile {failure.row},{failure.col}: {failure.error}")
        if len(self.failed) > 5:
            lines.append(f"... and {len(self.failed) - 5} more failed tiles (see the report)")
        return "\n".join(lines)


def peak_rss() -> int:
    """This process's peak resident memory in bytes, as the OS counts it.

    Linux's ``VmHWM``, the peak of this program's own memory: ``ru_maxrss`` there also counts the
    process that started it (kept across exec), which a big parent (a notebook, a benchmark) inflates.
    """
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:  # not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
