"""geosam's command line with a test double as the model: ``python -m tests.double_cli segment
SCENE -m LABELS.tif ...`` segments SCENE with the reference segmenter of its label raster (see
tests.doubles.from_environment). Everything else is the real CLI.

``$GEOSAM_TEST_WRITE_FAULT=ERRNO:N`` (e.g. ``ENOSPC:10``) makes every tile file write after the first
N fail as the kernel would with that error (a full disk, a lost permission)."""

import errno
import os

import geosam.models
import geosam.resume

from .doubles import from_environment

geosam.models.ModelSpec = from_environment  # the CLI looks ModelSpec up when a command runs


def _faulty(write, code: int, after: int):
    written = []

    def write_bytes(path, data):
        if path.suffix == ".tile":
            if len(written) >= after:
                raise OSError(code, os.strerror(code), str(path))
            written.append(path)
        write(path, data)

    return write_bytes


if os.environ.get("GEOSAM_TEST_WRITE_FAULT"):
    _name, _after = os.environ["GEOSAM_TEST_WRITE_FAULT"].split(":")
    geosam.resume.write_bytes = _faulty(geosam.resume.write_bytes, getattr(errno, _name), int(_after))

from geosam.cli import main  # noqa: E402 - after the stand-in is in place

if __name__ == "__main__":  # Dask's worker processes import this module again
    main(prog_name="geosam")
