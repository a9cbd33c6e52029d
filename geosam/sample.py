"""The sample scene shipped inside the package: a NAIP aerial image (public domain), for first runs.

Its provenance and licence are in ``sample.md`` beside it (``geosam/data/``).
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"


def sample_path() -> Path:
    """The path of geosam's sample scene, a GeoTIFF to try geosam on without data of your own.

    A NAIP aerial image of fields and ponds in central North Dakota (31 August 2020; public domain):
    934 × 723 px of 5 m, RGB, EPSG:26914, one tile with the default settings. Where it comes from and
    its licence: ``sample.md`` in the same folder.

    Example:
        ``geosam.segment(geosam.sample_path())``; on the command line ``geosam sample`` prints the path.
    """
    return DATA / "sample.tif"
