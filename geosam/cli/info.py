"""``geosam info``: how geosam reads a scene, and how it would tile it."""

from __future__ import annotations

import click

from geosam.cli.options import check_tiling, read_options, scene_argument, tiling_options


@click.command("info")
@scene_argument
@read_options
@tiling_options
def command(
    scene, bands, nodata, percentiles, stretch_8bit, resolution, pixel_coordinates, tile_size, overlap
) -> None:
    """Show how geosam reads SCENE: size, CRS, bands, stretch and tiling, the ground a tile covers, and
    advice when the pixel size is far from what the model segments typical objects at."""
    from geosam import scale
    from geosam.georef import open_scene
    from geosam.tiling import TileGrid

    check_tiling(tile_size, overlap)
    plan = open_scene(
        scene, bands=bands, percentiles=percentiles, stretch_8bit=stretch_8bit, resolution=resolution,
        pixel_coordinates=pixel_coordinates, nodata=nodata,
    )  # fmt: skip
    grid = TileGrid(plan.width, plan.height, tile_size, overlap)
    click.echo(f"scene:     {plan.path}")
    click.echo(f"size:      {plan.width} × {plan.height} px")
    click.echo(f"crs:       {plan.crs.to_string() if plan.crs else 'none (pixel coordinates)'}")
    click.echo(f"pixel:     {plan.pixel_size[0]:g} × {plan.pixel_size[1]:g}")
    click.echo(f"bounds:    {', '.join(f'{v:.3f}' for v in plan.bounds)}")
    click.echo(f"bands:     {','.join(map(str, plan.bands))}")
    click.echo(
        f"nodata:    {'as the file declares' if plan.nodata is None else f'{plan.nodata:g} (--nodata)'}"
    )
    click.echo(f"stretch:   {'none (8-bit)' if plan.stretch is None else plan.stretch}")
    click.echo(f"resampled: {plan.resampling or 'no'}")
    click.echo(
        f"tiles:     {len(grid)} ({grid.shape[0]} × {grid.shape[1]}) of {tile_size} px, overlap {overlap}"
    )
    ground, pixel = scale.footprint(plan, tile_size), scale.ground_pixel_m(plan)
    if ground is not None and pixel is not None:
        click.echo(f"ground:    {scale.length(pixel)} pixels; a tile covers {ground}")
    advice = scale.advice(plan, tile_size, overlap)
    if advice is not None:
        click.echo(f"advice:    {advice}")
