"""geosam's command line with a test double as the model: ``python -m tests.double_cli segment
SCENE -m LABELS.tif ...`` segments SCENE with the reference segmenter of its label raster (see
tests.doubles.from_environment). Everything else is the real CLI."""

import geosam.models

from .doubles import from_environment

geosam.models.ModelSpec = from_environment  # the CLI looks ModelSpec up when a command runs

from geosam.cli import main  # noqa: E402 - after the stand-in is in place

if __name__ == "__main__":  # Dask's worker processes import this module again
    main(prog_name="geosam")
