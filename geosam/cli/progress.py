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

    def step(self, done: int, total: int) -> None:
        """``done`` of ``total`` tiles so far (``segmented``'s ``on_learn``): the bar shows from the first
        call and goes at the last."""
        if self.total is None:
            self.start(total)
        if done > self.done:
            self.update(done - self.done)
        if done == total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Tiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SceneBars:
    """A batch run's bars, one per scene (``geosam.batch.run.run``'s ``on_start`` and ``on_tile``) and one
    while a scene learns from its examples (``on_learn``), each named after its scene."""

    def __init__(self, ctx: click.Context) -> None:
        self.ctx = ctx
        self.bars: dict[str, Tiles] = {}

    def start(self, job: Any, total: int) -> None:
        self.bars[job.name] = Tiles(self.ctx, job.name, total)

    def tile(self, job: Any) -> None:
        self.bars[job.name].update(1)

    def learn(self, job: Any, done: int, total: int) -> None:
        what = _learning(job)
        if what not in self.bars:
            self.bars[what] = Tiles(self.ctx, what)
        self.bars[what].step(done, total)

    def close(self, job: Any) -> None:
        """The scene's bars go (it finished, failed or was skipped)."""
        for what in (job.name, _learning(job)):
            bar = self.bars.pop(what, None)
            if bar is not None:
                bar.close()


def _learning(job: Any) -> str:
    """The name of a scene's bar while it learns from its examples."""
    return f"{job.name}: learning"
