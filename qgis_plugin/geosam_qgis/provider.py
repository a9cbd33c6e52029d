"""The Processing provider "geosam": its algorithms and its one setting, where geosam is."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import runner

SETTING = "GEOSAM_EXECUTABLE"


def icon() -> QIcon:
    return QIcon(str(Path(__file__).with_name("icon.svg")))


def configured_executable() -> str:
    """The provider's setting: geosam's executable or its environment's folder ('' when not set)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # Processing's Python plugin is not loaded: the environment and PATH only
        return ""
    return str(ProcessingConfig.getSetting(SETTING) or "")


class GeosamProvider(QgsProcessingProvider):
    def id(self):
        return "geosam"

    def name(self):
        return "geosam"

    def longName(self):
        return "geosam: Segment Anything on GeoTIFF scenes"

    def icon(self):
        return icon()

    def load(self):
        from processing.core.ProcessingConfig import ProcessingConfig, Setting

        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(
                self.name(), SETTING,
                "geosam executable (.../bin/geosam) or its environment's folder [default: found on PATH, "
                "$GEOSAM_EXECUTABLE, ~/.local/bin, ~/geosam, ~/.venv]",
                "", valuetype=Setting.FILE,
            )
        )  # fmt: skip
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        from processing.core.ProcessingConfig import ProcessingConfig

        ProcessingConfig.removeSetting(SETTING)

    def loadAlgorithms(self):
        from .algorithms import ALGORITHMS

        runner.forget()  # the setting may have changed: ask geosam for its options again
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
