"""The ``geosam`` command line: a click group with rio-style options, one module per command.

Options are made from ``geosam.settings`` (``geosam.cli.options``); errors of geosam's end in one
line and exit code 1 (tracebacks with -v), usage errors exit 2.
"""

from __future__ import annotations

import logging
import sys
import traceback

import click

from geosam._version import __version__
from geosam.cli import progress
from geosam.errors import GeosamError

log = logging.getLogger("geosam")


class Group(click.Group):
    """Turns geosam's errors into one-line messages and exit code 1 (tracebacks only with -v)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeosamError as exc:
            self._fail(ctx, str(exc))
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for a CLI
            self._fail(ctx, f"unexpected {type(exc).__name__}: {exc} (rerun with -v for details)")

    @staticmethod
    def _fail(ctx: click.Context, message: str) -> None:
        if logging.getLogger("geosam").isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        click.echo(f"Error: {message}", err=True)
        ctx.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geosam")
@click.option("-v", "--verbose", count=True, help="More detail (repeat for debug output and tracebacks).")
@click.option("-q", "--quiet", count=True, help="Less output (no progress bar).")
@click.option(
    "--progress",
    type=click.Choice(progress.STYLES),
    default="bar",
    show_default=True,
    help="Progress on stderr: a bar (on terminals), or one JSON object a line for programs that run geosam.",
)
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: int, progress: str) -> None:
    """Segment objects in GeoTIFF scenes with Segment Anything models, as georeferenced polygons."""
    level = max(logging.WARNING - 10 * verbose + 10 * quiet, logging.DEBUG)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    dask_level = logging.INFO if verbose >= 2 else logging.ERROR  # Dask's own chatter only with -vv
    for name, floor in (("geosam", level), ("distributed", dask_level)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(floor)
        logger.propagate = False
    ctx.obj = {"quiet": quiet > 0, "progress": progress}


def _register() -> None:
    from geosam.cli import change, evaluate, info, models, options_json, prompt, run, sample, segment

    for module in (segment, prompt, run, info, evaluate, sample, options_json):
        main.add_command(module.command)
    main.add_command(change.change_command)
    main.add_command(change.track_command)
    main.add_command(models.models)


_register()
