"""Model sources for runs that must be slowed down, interrupted or made to fail (picklable: they
travel to Dask worker processes, which import them from ``tests.doubles``)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from geosam.models.base import Masks
from geosam.testing import ReferenceSegmenter
from geosam.tiling import TileImage


@dataclass(frozen=True)
class SlowReference:
    """The reference segmenter of a synthetic scene's label raster, ``delay`` seconds per tile.

    Tiles listed in ``fail`` (as ``"row,col"``) raise every time; each try on them leaves a file in
    ``tries`` (when given), so tests can count the retries.
    """

    labels: str
    delay: float = 0.0
    fail: tuple[str, ...] = ()
    tries: str | None = None
    trace: str | None = None  # a folder: each tile leaves PID-ROW_COL-start before and -end after
    name: str = "slow-reference"

    def check(self) -> None:
        pass

    def load(self) -> _Slow:
        return _Slow(self)


class _Slow:
    name = "slow-reference"

    def __init__(self, source: SlowReference) -> None:
        self.source = source
        self.reference = ReferenceSegmenter(source.labels)

    def automatic(self, tile: TileImage) -> Masks:
        where = f"{tile.tile.row},{tile.tile.col}"
        if where in self.source.fail:
            if self.source.tries:
                os.close(tempfile.mkstemp(dir=self.source.tries, prefix=f"try-{where}-")[0])
            raise RuntimeError(f"the model fails on tile {where}")
        self._mark(tile, "start")
        time.sleep(self.source.delay)
        masks = self.reference.automatic(tile)
        self._mark(tile, "end")
        return masks

    def _mark(self, tile: TileImage, what: str) -> None:
        if self.source.trace:
            Path(self.source.trace, f"{os.getpid()}-{tile.tile.row}_{tile.tile.col}-{what}").touch()


def from_environment(
    name: str,
    device: str = "cpu",
    params: object = None,
    **_model_options: object,  # checkpoint, backend, precision ...: not used by the reference
) -> SlowReference:
    """Stands in for ``ModelSpec`` in tests/double_cli.py: ``-m LABELS.tif``; delay and failing tiles
    from $GEOSAM_TEST_DELAY and $GEOSAM_TEST_FAIL (``row,col;row,col``), $GEOSAM_TEST_TRIES and $GEOSAM_TEST_TRACE (folders)."""
    fail = tuple(t for t in os.environ.get("GEOSAM_TEST_FAIL", "").split(";") if t)
    delay = float(os.environ.get("GEOSAM_TEST_DELAY", "0"))
    return SlowReference(
        name, delay, fail, os.environ.get("GEOSAM_TEST_TRIES"), os.environ.get("GEOSAM_TEST_TRACE")
    )
