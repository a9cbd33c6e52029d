"""geosam for QGIS: a Processing provider that runs geosam (Segment Anything on GeoTIFF scenes) in
its own environment, as a subprocess; QGIS's Python never imports torch or Dask."""


def classFactory(iface):
    from .plugin import GeosamPlugin

    return GeosamPlugin(iface)
