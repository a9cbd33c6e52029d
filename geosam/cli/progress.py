"""Progress on stderr: a tqdm bar on terminals, or one JSON object a line for programs that run geosam.

``geosam --progress json COMMAND`` writes one line per event, each a JSON object with an ``event``
key, beside the command's own messages (which never start with ``{``):

- ``{"event": "tiles", "what": "segment", "done": 3, "total": 12}``: a tile finished (``what``: the
  scene's name in ``geosam run``);
- ``{"event": "scene", "name": "a", "status": "done", "objects": 41, "output": "out/a.gpkg"}``:
  a scene of a pipeline finished (``status``: done, skipped, failed; ``message`` says why);
- ``{"event": "written", "paths": ["out/a.gpkg", ...]}``: the files a pipeline's run leaves (its
  merged file, or each scene's), at its end.

The QGIS plugin reads them into Processing's progress bar.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

STYLES = ("bar", "json")


def is_json(ctx: click.Context) -> bool:
    """Whether the command line asked for JSON lines (``geosam --progress json``)."""
    return bool(ctx.find_root().obj and ctx.find_root().obj.get("progress") == "json")


def event(ctx: click.Context, kind: str, /, **fields: Any) -> None:
    """One JSON line on stderr, with ``--progress json`` only."""
    if is_json(ctx):
        click.echo(json.dumps({"event": kind, **fields}, default=str), err=True)


class Tiles:
    """Tiles done out of ``total``: JSON lines, or a tqdm bar (on terminals only, never with -q).

    Without ``total``, ``start`` gives it before the first tile (a run's ``on_start``).
    """

    def __init__(self, ctx: click.Context, what: str, total: int | None = None) -> None:
        self.ctx, self.what, self.done = ctx, what, 0
        self.total: int | None = None
        self.bar = None
        if total is not None:
            self.start(total)

    def start(self, total: int) -> None:
        """The number of tiles; the bar shows from here."""
        self.total = total
        if not is_json(self.ctx):
            from tqdm import tqdm

            quiet = self.ctx.find_root().obj.get("quiet", False)
            self.bar = tqdm(total=total, unit="tile", desc=self.what, file=sys.stderr, leave=False,
                            disable=True if quiet else None)  # fmt: skip

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            event(self.ctx, "tiles", what=self.what, done=self.done, total=self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Tiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
