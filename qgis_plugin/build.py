"""Build the QGIS plugin's installable zip (Plugins > Manage and Install Plugins > Install from ZIP).

Usage: python3 qgis_plugin/build.py [-o dist/geosam_qgis-VERSION.zip]   (or ./geosam.sh qgis-plugin)

The zip holds the folder geosam_qgis/ as QGIS wants it, its metadata's version set to geosam's.
Standard library only: any Python 3 builds it, without geosam's environment.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "geosam_qgis"
VERSION_FILE = HERE.parent / "geosam" / "_version.py"


def version() -> str:
    found = re.search(r'__version__ = "([^"]+)"', VERSION_FILE.read_text())
    if found is None:
        sys.exit(f"build.py: error: no __version__ in {VERSION_FILE}")
    return found.group(1)


def build(out: Path) -> Path:
    """Write the zip to ``out``: every file of geosam_qgis/ but Python's caches."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in PLUGIN.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            name = f"{PLUGIN.name}/{path.relative_to(PLUGIN).as_posix()}"
            text = path.read_bytes()
            if path.name == "metadata.txt":
                text = re.sub(rb"(?m)^version=.*$", f"version={version()}".encode(), text)
            archive.writestr(name, text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="the zip [default: dist/geosam_qgis-VERSION.zip]")
    args = parser.parse_args()
    out = build(args.output or HERE.parent / "dist" / f"geosam_qgis-{version()}.zip")
    print(f"{out}: install it in QGIS with Plugins > Manage and Install Plugins > Install from ZIP")


if __name__ == "__main__":
    main()
