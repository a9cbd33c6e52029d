"""``geosam models``: install, export, import and list model checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import click

log = logging.getLogger("geosam")


@click.group()
def models() -> None:
    """Install and list model checkpoints."""


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy is installed.")
@click.pass_context
def models_fetch(ctx, names: tuple[str, ...], force: bool) -> None:
    """Download and verify checkpoints NAMES (default: mobile_sam) into the model cache."""
    from geosam.models import DEFAULT_MODEL, weights

    for name in names or (DEFAULT_MODEL,):
        with weights.progress_bar(name, disable=ctx.obj["quiet"]) as progress:
            path = weights.fetch(name, force=force, progress=progress, log=log.info)
        click.echo(f"{name}: {path}")


@models.command("export")
@click.argument("name")
@click.option("--force", is_flag=True, help="Export again even if a current export exists.")
@click.option(
    "--verify",
    "scenes",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Compare ONNX Runtime with torch on the first tile of this scene (repeatable); exit 1 if they differ.",
)
def models_export(name: str, force: bool, scenes: tuple[Path, ...]) -> None:
    """Export model NAME to ONNX (image encoder, prompt decoder) beside its checkpoint, for --backend onnx."""
    from geosam.errors import ModelError
    from geosam.models import ModelSpec, export_model, load_model
    from geosam.models.onnx import verify
    from geosam.models.sam import SamModel

    exported = export_model(name, force=force)
    click.echo(f"{name}: {exported.encoder}\n{name}: {exported.decoder}")
    if scenes:
        from geosam.georef import open_scene
        from geosam.tiling import TileGrid, read_tile

        images = []
        for path in scenes:
            scene = open_scene(path)
            grid = TileGrid(scene.width, scene.height)
            images.append(read_tile(scene, next(iter(grid)), grid.size).image)
        torch_model, onnx_model = (load_model(ModelSpec(name, backend=b)) for b in ("torch", "onnx"))
        if not isinstance(torch_model, SamModel) or not isinstance(onnx_model, SamModel):
            raise ModelError(f"model {name!r} cannot be compared between runtimes: it is not a SAM model")
        result = verify(torch_model, onnx_model, images)
        click.echo(f"verified: {result.describe()}")
        if not result.passed:
            raise ModelError(f"the ONNX export of {name!r} differs from torch: export it again with --force")


@models.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def models_import(file: Path) -> None:
    """Install a model file FILE obtained elsewhere (recognised and verified by its sha256)."""
    from geosam.models import weights

    click.echo(f"installed {weights.import_file(file)}")


@models.command("list")
def models_list() -> None:
    """Show known models, whether they are installed, where, and where they came from."""
    from geosam.models import weights

    click.echo(f"cache: {weights.cache_dir()}")
    for row in weights.list_models():
        where = f"{row.path}\n    source: {row.source}" if row.path else "not installed"
        click.echo(f"{row.name}  [{row.architecture}; {row.licence}]\n    {where}")
