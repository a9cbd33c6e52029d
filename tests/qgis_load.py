"""Load a vector layer in real QGIS (run with the system python that has python3-qgis); print JSON.

Usage: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_load.py FILE LAYER
"""

import json
import os
import sys

from qgis.core import Qgis, QgsApplication, QgsFeatureSource, QgsVectorLayer

app = QgsApplication([], False)
app.initQgis()
messages = []
QgsApplication.messageLog().messageReceived.connect(
    lambda message, tag, level: messages.append(f"{tag}: {message}") if level >= Qgis.Warning else None
)
layer = QgsVectorLayer(f"{sys.argv[1]}|layername={sys.argv[2]}", sys.argv[2], "ogr")
features = list(layer.getFeatures()) if layer.isValid() else []
app.processEvents()
renderer = layer.renderer() if layer.isValid() else None
ranges = renderer.ranges() if renderer is not None and renderer.type() == "graduatedSymbol" else []
symbols = [r.symbol().symbolLayer(0).properties() for r in ranges]
print(
    json.dumps(
        {
            "qgis": Qgis.QGIS_VERSION,
            "valid": layer.isValid(),
            "count": layer.featureCount(),
            "crs": layer.crs().authid(),
            "spatial_index": layer.dataProvider().hasSpatialIndex() == QgsFeatureSource.SpatialIndexPresent,
            "invalid_geometries": sum(not f.geometry().isGeosValid() for f in features),
            "warnings": messages,
            # the style QGIS applied on opening: the GeoPackage's default style, or QGIS's own single symbol
            "renderer": renderer.type() if renderer is not None else None,
            "style_field": renderer.classAttribute() if ranges else None,
            "classes": [[r.lowerValue(), r.upperValue()] for r in ranges],
            "fill": sorted({s.get("style") for s in symbols}),
            "outline_colours": [s.get("outline_color") for s in symbols],
            "styles": layer.listStylesInDatabase()[2] if layer.isValid() else [],
        }
    ),
    flush=True,
)
os._exit(0)  # QGIS 3.22 can crash in its exit handlers when run as a script
