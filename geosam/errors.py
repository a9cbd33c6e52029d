"""geosam's exceptions: one root, narrow subclasses that also inherit the matching builtin."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class GeosamError(Exception):
    """Root of every error geosam reports to a user; the message says what to do next.

    Catch ``GeosamError`` for any of them, or a subclass for one kind. Each subclass also inherits
    the builtin that matches it, so ``except ValueError`` still catches a bad input:

    - ``InputError`` (ValueError): the scene, band choice or another input cannot be used as given;
      ``SceneNotFoundError`` (also FileNotFoundError) when the scene path does not exist, and
      ``geosam.prompts.PromptError`` for prompts.
    - ``OutputError`` (OSError): the output path cannot be written.
    - ``ModelError`` (RuntimeError): a model or its weights are missing, corrupt or of the wrong
      architecture; ``FetchError`` when no source could provide a verified checkpoint.
    - ``TileError`` (RuntimeError): tiles failed after their retries; its ``report`` lists them.
      ``TileInputError`` (also an InputError) when every failed tile failed on its input.
    - ``SchedulerError`` (ConnectionError): the Dask scheduler cannot be reached.

    The classes are in ``geosam.errors``.
    """


class InputError(GeosamError, ValueError):
    """The scene, band choice or another input cannot be used as given."""


class SceneNotFoundError(InputError, FileNotFoundError):
    """The scene path does not exist or cannot be opened."""


class OutputError(GeosamError, OSError):
    """The output path cannot be written."""


class ModelError(GeosamError, RuntimeError):
    """A model or its weights are missing, corrupt or of the wrong architecture."""


class FetchError(ModelError):
    """No source could provide a verified copy of a checkpoint."""


def reason(exc: BaseException) -> str:
    """The first line of the root cause of ``exc`` (GDAL's own words rather than a wrapper's)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Report(Protocol):
    """What a failed run's report offers (``geosam.report.RunReport``)."""

    def write(self, path: Path) -> None: ...


class TileError(GeosamError, RuntimeError):
    """Tiles failed after their retries; ``report`` (a RunReport) lists them."""

    def __init__(self, message: str, report: _Report | None = None) -> None:
        super().__init__(message)
        self.report = report


class SchedulerError(GeosamError, ConnectionError):
    """The Dask scheduler named by --scheduler (or Dask's config) cannot be reached."""


class TileInputError(TileError, InputError):
    """Every failed tile failed on its input (e.g. pixels of a truncated file that cannot be read)."""
