"""From the plugin's zip to objects on the map, timed step by step, headless; the docs' picture.

Usage (QGIS's Python, e.g. Debian's python3-qgis; geosam installed in its own environment):

    QT_QPA_PLATFORM=offscreen python3 qgis_plugin/demo.py GEOSAM_EXECUTABLE [SCENE] [-o docs/qgis.png]

The steps a user takes, as QGIS takes them: build the zip; install it (Install from ZIP unpacks it
into the profile's python/plugins folder); start the plugin; set Settings > Options > Processing > Providers >
geosam > geosam executable; run Segment scene with its defaults (the sample scene shipped with
geosam by default); load the result into the project with its style and draw the map. A fresh QGIS
profile in a temporary folder, so nothing of the user's is touched. Prints each step's seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "geosam" / "data" / "sample.tif"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("geosam", help="the geosam executable (e.g. .venv/bin/geosam)")
parser.add_argument("scene", nargs="?", default=str(SAMPLE), help="the scene [default: geosam's sample]")
parser.add_argument("-o", "--output", type=Path, help="draw the map into this PNG")
args = parser.parse_args()

profile = Path(tempfile.mkdtemp(prefix="geosam-qgis-demo-"))
os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
steps: list[tuple[str, float]] = []
clock = time.monotonic()


def step(name: str) -> None:
    global clock
    now = time.monotonic()
    steps.append((name, now - clock))
    clock = now


built = profile / "geosam_qgis.zip"
subprocess.run([sys.executable, str(HERE / "build.py"), "-o", str(built)], check=True, capture_output=True)
step("build the zip (./geosam.sh qgis-plugin)")

from qgis.core import (  # noqa: E402 - after the profile is chosen
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402

app = QgsApplication([], False)
app.initQgis()
plugins = Path(QgsApplication.qgisSettingsDirPath(), "python", "plugins")
plugins.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(built) as archive:
    archive.extractall(plugins)  # what Install from ZIP does
step("install from ZIP (unpacked into the profile)")

sys.path[:0] = [str(plugins), "/usr/share/qgis/python/plugins"]
from processing.core.Processing import Processing  # noqa: E402
from processing.core.ProcessingConfig import ProcessingConfig  # noqa: E402

Processing.initialize()
import processing  # noqa: E402
import qgis.utils  # noqa: E402

qgis.utils.loadPlugin("geosam_qgis")
qgis.utils.startPlugin("geosam_qgis")
assert QgsApplication.processingRegistry().providerById("geosam") is not None
step("enable the plugin")

ProcessingConfig.setSettingValue("GEOSAM_EXECUTABLE", args.geosam)
QgsApplication.processingRegistry().providerById("geosam").refreshAlgorithms()
step("set geosam's path in the provider's settings")

project = QgsProject.instance()
scene = QgsRasterLayer(args.scene, Path(args.scene).stem)
project.addMapLayer(scene)
context = QgsProcessingContext()
context.setProject(project)
feedback = QgsProcessingFeedback()
out = profile / "objects.gpkg"
parameters = {"INPUT": scene, "OUTPUT": QgsProcessingOutputLayerDefinition(str(out), project)}
processing.run("geosam:segment", parameters, context=context, feedback=feedback)
step("run Segment scene with its defaults")

for uri, details in context.layersToLoadOnCompletion().items():  # as the Processing dialog does
    layer = QgsProcessingUtils.mapLayerFromString(uri, context)
    layer.setName(details.name)
    details.postProcessor().postProcessLayer(layer, context, feedback)
    project.addMapLayer(layer)
    objects = layer
settings = QgsMapSettings()
settings.setLayers([objects, scene])
settings.setDestinationCrs(scene.crs())
settings.setExtent(scene.extent())
settings.setOutputSize(QSize(800, round(800 * scene.height() / scene.width())))
job = QgsMapRendererParallelJob(settings)
job.start()
job.waitForFinished()
if args.output:
    job.renderedImage().save(str(args.output), "PNG")
step("load the objects styled and draw the map")

print(
    f"{objects.featureCount()} objects, renderer {objects.renderer().type()} by {objects.renderer().classAttribute()}"
)
for name, seconds in steps:
    print(f"{seconds:7.1f} s  {name}")
print(f"{sum(s for _, s in steps):7.1f} s  in all")
os._exit(0)  # QGIS 3.22 can crash in its exit handlers when run as a script
