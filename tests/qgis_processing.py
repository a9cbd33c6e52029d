"""The geosam plugin in real QGIS (run with the system python that has python3-qgis); print JSON.

Usage: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_processing.py JOB.json

JOB: {"plugins": folder holding geosam_qgis/, "describe": true} prints the provider's algorithms and
their parameters; {"plugins": ..., "algorithm": "geosam:segment", "parameters": {...}, "cancel_at":
percent (optional)} runs one through ``processing.run`` and prints its results, its progress, the
layers Processing would load (as loaded, with the plugin's post-processing: valid, CRS, style) or its
error; with "in_model": true, it runs as the one step of a model, as the graphical modeler makes one.
geosam is found as the plugin finds it ($GEOSAM_EXECUTABLE here).
"""

import json
import os
import sys
import time

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingUtils,
    QgsProject,
)

job = json.loads(open(sys.argv[1]).read())
app = QgsApplication([], False)
app.initQgis()
sys.path.insert(0, "/usr/share/qgis/python/plugins")
sys.path.insert(0, job["plugins"])
from processing.core.Processing import Processing  # noqa: E402 - after QGIS is up

Processing.initialize()
import processing  # noqa: E402
from geosam_qgis import classFactory  # noqa: E402

plugin = classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()


def describe() -> dict:
    provider = registry.providerById("geosam")
    algorithms = {}
    for algorithm in provider.algorithms():
        algorithms[algorithm.id()] = {
            "name": algorithm.displayName(),
            "parameters": {
                p.name(): {
                    "type": p.type(),
                    "default": p.defaultValue(),
                    "optional": bool(p.flags() & p.FlagOptional),
                    "advanced": bool(p.flags() & p.FlagAdvanced),
                    "min": p.minimum() if hasattr(p, "minimum") else None,
                    "max": p.maximum() if hasattr(p, "maximum") else None,
                    "options": p.options() if hasattr(p, "options") else None,
                    "help": p.help(),
                }
                for p in algorithm.parameterDefinitions()
            },
        }
    return {
        "qgis": Qgis.QGIS_VERSION,
        "provider": provider.name() if provider else None,
        "algorithms": algorithms,
    }


class Feedback(QgsProcessingFeedback):
    def __init__(self, cancel_at=None):
        super().__init__()
        self.progress, self.messages, self.cancel_at = [], [], cancel_at
        self.progressChanged.connect(self.on_progress)

    def on_progress(self, value):
        self.progress.append(round(value, 1))
        if self.cancel_at is not None and value >= self.cancel_at:
            self.cancel()

    def pushInfo(self, info):
        self.messages.append(info)
        super().pushInfo(info)


def loaded(context: QgsProcessingContext, feedback: Feedback) -> list:
    """The layers Processing loads when the algorithm ends, as the GUI does (post-processors run)."""
    layers = []
    for uri, details in context.layersToLoadOnCompletion().items():
        layer = QgsProcessingUtils.mapLayerFromString(uri, context)
        if layer is None:
            layers.append({"uri": uri, "valid": False})
            continue
        if details.postProcessor():
            details.postProcessor().postProcessLayer(layer, context, feedback)
        renderer = layer.renderer()
        layers.append(
            {
                "uri": uri,
                "name": details.name,
                "valid": layer.isValid(),
                "crs": layer.crs().authid() or layer.crs().toWkt()[:60],
                "count": layer.featureCount(),
                "renderer": renderer.type() if renderer else None,
                "style_field": renderer.classAttribute() if hasattr(renderer, "classAttribute") else None,
            }
        )
    return layers


def in_model(algorithm: str, parameters: dict) -> tuple[QgsProcessingModelAlgorithm, dict]:
    """A model of one step, as the graphical modeler makes it: the algorithm with static inputs, its
    destinations the model's outputs (``step:NAME``); and the model's parameters."""
    model = QgsProcessingModelAlgorithm("geosam step", "tests")
    child = QgsProcessingModelChildAlgorithm(algorithm)
    child.setChildId("step")
    outputs, given = {}, {}
    for p in registry.algorithmById(algorithm).parameterDefinitions():
        if p.name() not in parameters:
            continue
        if p.isDestination():
            output = QgsProcessingModelOutput(p.name(), p.description())
            output.setChildId("step")
            output.setChildOutputName(p.name())
            outputs[p.name()] = output
            given[f"step:{p.name()}"] = parameters[p.name()]
        else:
            static = QgsProcessingModelChildParameterSource.fromStaticValue(parameters[p.name()])
            child.addParameterSources(p.name(), [static])
    child.setModelOutputs(outputs)
    model.addChildAlgorithm(child)
    model.updateDestinationParameters()
    return model, given


def run() -> dict:
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = Feedback(job.get("cancel_at"))
    if job.get("in_model"):
        model, parameters = in_model(job["algorithm"], job["parameters"])
        job["algorithm"] = model
        started = time.monotonic()
        results = processing.run(model, parameters, context=context, feedback=feedback)
        return {"results": results, "error": None, "seconds": time.monotonic() - started}
    parameters = dict(job["parameters"])
    for p in registry.algorithmById(job["algorithm"]).destinationParameterDefinitions():
        if p.type() in ("vectorDestination", "rasterDestination", "sink") and p.name() in parameters:
            # as the algorithm dialog passes it: written there, then loaded into the project
            parameters[p.name()] = QgsProcessingOutputLayerDefinition(
                parameters[p.name()], QgsProject.instance()
            )
    started = time.monotonic()
    try:
        results = processing.run(job["algorithm"], parameters, context=context, feedback=feedback)
        error = None
    except QgsProcessingException as exc:
        results, error = None, str(exc)
    seconds = time.monotonic() - started
    return {
        "results": results,
        "error": error,
        "seconds": seconds,
        "progress": feedback.progress,
        "messages": feedback.messages,
        "layers": loaded(context, feedback) if error is None else [],
    }


print(json.dumps(describe() if job.get("describe") else run(), default=str), flush=True)
os._exit(0)  # QGIS 3.22 can crash in its exit handlers when run as a script
