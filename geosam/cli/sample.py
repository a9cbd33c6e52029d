"""``geosam sample``: the path of the sample scene shipped with geosam."""

from __future__ import annotations

import click


@click.command("sample")
@click.pass_context
def command(ctx: click.Context) -> None:
    """Print the path of the sample scene shipped with geosam (a NAIP aerial image, public domain).

    For a first run without data of your own: geosam segment "$(geosam sample)" -o sample.gpkg.
    What the scene is, where it comes from and its licence go to stderr (not with -q).
    """
    from geosam.sample import sample_path

    path = sample_path()
    click.echo(path)
    if not ctx.obj["quiet"]:
        note = path.with_suffix(".md")
        title = note.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        click.echo(f"{title}; provenance and licence: {note}", err=True)
