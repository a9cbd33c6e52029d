"""The plugin: it adds the geosam Processing provider, in QGIS and in qgis_process."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import GeosamProvider


class GeosamPlugin:
    def __init__(self, iface=None) -> None:
        self.iface = iface
        self.provider: GeosamProvider | None = None

    def initProcessing(self):
        self.provider = GeosamProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
