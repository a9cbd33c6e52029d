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
        }
    ),
    flush=True,
)
os._exit(0)  # QGIS 3.22 can crash in its exit handlers when run as a script
