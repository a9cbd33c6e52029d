"""``python -m geosam``: the command line."""

from geosam.cli import main

main(prog_name="geosam")
