"""The Processing algorithms: each runs one geosam command as a subprocess.

Each algorithm has a few parameters of its own (the layers in and out) and one parameter per option of
its geosam command, made from ``geosam options``: name, type, default, limits and help are the
command line's, which takes them from ``geosam.settings`` (nothing is spelled here twice). The
options the algorithm sets itself (scene, output, work folder ...) are left out; the main ones are
shown first, the others are Processing's advanced parameters. Parameter names are the options' own,
in capitals (``--points-per-side``: ``POINTS_PER_SIDE``), stable for models, batches and
``qgis_process``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsProviderRegistry,
    QgsVectorLayer,
)

from . import runner

FLOAT_TYPES = ("float", "floatrange")
INT_TYPES = ("integer", "intrange")


def executable() -> Path:
    """The geosam that runs, from the provider's setting (a one-line error when there is none)."""
    from .provider import configured_executable

    return runner.find(configured_executable())


def described(command: str) -> dict[str, dict[str, Any]]:
    """The options of ``command`` (none when geosam is not found: the algorithm then says how to
    install it when it runs)."""
    try:
        return runner.options(executable()).get(command, {})
    except runner.GeosamError:
        return {}


def long_option(option: dict[str, Any]) -> str:
    return next((o for o in option["opts"] if o.startswith("--")), option["opts"][0])


def title(name: str) -> str:
    return name.replace("_", " ").capitalize()


def parameter(option: dict[str, Any]) -> QgsProcessingParameterDefinition | None:
    """The Processing parameter of one option of a geosam command; None for those it cannot take."""
    name, kind, default = option["name"].upper(), option["type"], option["default"]
    optional = default is None
    if option.get("multiple") or option.get("nargs", 1) != 1:
        return None
    if kind == "bool":
        made: QgsProcessingParameterDefinition = QgsProcessingParameterBoolean(
            name, title(option["name"]), bool(default)
        )
    elif kind in FLOAT_TYPES + INT_TYPES:
        number = (
            QgsProcessingParameterNumber.Double
            if kind in FLOAT_TYPES
            else QgsProcessingParameterNumber.Integer
        )
        made = QgsProcessingParameterNumber(name, title(option["name"]), number, default, optional)
        if option.get("min") is not None:
            made.setMinimum(option["min"])
        if option.get("max") is not None:
            made.setMaximum(option["max"])
    elif kind == "choice":
        choices = option["choices"]
        index = choices.index(default) if default in choices else None
        made = QgsProcessingParameterEnum(name, title(option["name"]), choices, False, index, optional)
    elif kind == "path":
        made = QgsProcessingParameterFile(name, title(option["name"]), optional=True)
    else:
        made = QgsProcessingParameterString(name, title(option["name"]), default, optional=optional)
    made.setHelp(option.get("help") or "")
    return made


def arguments(
    algorithm: QgsProcessingAlgorithm, options: dict[str, dict[str, Any]], parameters: dict[str, Any],
    context: QgsProcessingContext,
) -> list[str]:  # fmt: skip
    """The command line options of the generated parameters that have a value."""
    args: list[str] = []
    for option in options.values():
        name = option["name"].upper()
        if algorithm.parameterDefinition(name) is None or parameters.get(name) in (None, ""):
            continue
        kind = option["type"]
        if kind == "bool":
            value = algorithm.parameterAsBool(parameters, name, context)
            if value != bool(option["default"]):
                args += [long_option(option)] if value else option["secondary_opts"][:1]
        elif kind in FLOAT_TYPES:
            args += [long_option(option), repr(algorithm.parameterAsDouble(parameters, name, context))]
        elif kind in INT_TYPES:
            args += [long_option(option), str(algorithm.parameterAsInt(parameters, name, context))]
        elif kind == "choice":
            args += [
                long_option(option),
                option["choices"][algorithm.parameterAsEnum(parameters, name, context)],
            ]
        else:
            value = algorithm.parameterAsString(parameters, name, context)
            args += [long_option(option), value] if value else []
    return args


class StyleFromFile(QgsProcessingLayerPostProcessorInterface):
    """Applies the style geosam stored in the GeoPackage (its default style) to the loaded layer."""

    instance: ClassVar[StyleFromFile | None] = None

    def postProcessLayer(self, layer, context, feedback):
        if isinstance(layer, QgsVectorLayer) and layer.isValid():
            apply_stored_style(layer)

    @classmethod
    def create(cls) -> StyleFromFile:
        cls.instance = cls()  # kept alive: QGIS holds only a C++ pointer to it
        return cls.instance


def apply_stored_style(layer: QgsVectorLayer) -> bool:
    """The default style geosam wrote into the layer's GeoPackage, applied (Processing loads layers
    without their default style); False if it has none."""
    _, ok = layer.loadDefaultStyle()
    layer.triggerRepaint()
    return ok


def load_styled(path: str, name: str, context: QgsProcessingContext, project_name: str) -> None:
    """Load ``path`` into the project when the algorithm finishes, with geosam's stored style."""
    details = QgsProcessingContext.LayerDetails(project_name, context.project(), name)
    details.setPostProcessor(StyleFromFile.create())
    context.addLayerToLoadOnCompletion(path, details)


class GeosamAlgorithm(QgsProcessingAlgorithm):
    """One geosam command: fixed parameters of the subclass, then one per option of the command."""

    command = ""
    key = ""  # the algorithm's name where it is not the command's
    label = ""
    help_text = ""
    leave_out: tuple[str, ...] = ()  # options the algorithm sets itself
    main: tuple[str, ...] = ()  # options shown first; the others are advanced

    def name(self):
        return self.key or self.command

    def displayName(self):
        return self.label

    def shortHelpString(self):
        return self.help_text

    def createInstance(self):
        return type(self)()

    def icon(self):
        from .provider import icon

        return icon()

    def initAlgorithm(self, config=None):
        self.fixed_parameters()
        self.options = {k: v for k, v in described(self.command).items() if k not in self.leave_out}
        order = [n for n in self.main if n in self.options] + [n for n in self.options if n not in self.main]
        for name in order:
            made = parameter(self.options[name])
            if made is None or self.parameterDefinition(made.name()) is not None:
                continue
            if name not in self.main:
                made.setFlags(made.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(made)

    def fixed_parameters(self) -> None:
        raise NotImplementedError

    def geosam(
        self, args: list[str], parameters: dict[str, Any], context: QgsProcessingContext,
        feedback: QgsProcessingFeedback, events: list[dict[str, Any]] | None = None,
    ) -> str:  # fmt: skip
        """Run the command with ``args`` and the generated parameters' options; its stdout (and its
        progress events in ``events``)."""
        try:
            found = executable()
            runner.options(found)  # a geosam too old for this plugin says so here
        except runner.GeosamError as exc:
            raise QgsProcessingException(str(exc)) from None
        options = getattr(self, "options", None) or {}
        command = [self.command, *args, *arguments(self, options, parameters, context)]

        def on_event(event: dict[str, Any]) -> None:
            if events is not None:
                events.append(event)
            if event.get("event") == "tiles" and event.get("total"):
                feedback.setProgress(100.0 * event["done"] / event["total"])
                feedback.setProgressText(
                    f"{event.get('what', '')}: {event['done']} of {event['total']} tiles"
                )
            elif event.get("event") == "scene":
                feedback.pushInfo(f"{event['name']}: {event['status']} {event.get('message') or ''}".rstrip())

        try:
            return runner.run(found, command, on_event, feedback.pushInfo, feedback.isCanceled)
        except runner.GeosamError as exc:
            raise QgsProcessingException(str(exc)) from None


def raster_path(algorithm: QgsProcessingAlgorithm, parameters, context) -> str:
    """The file of the raster parameter INPUT (a GDAL layer on a file)."""
    layer = algorithm.parameterAsRasterLayer(parameters, "INPUT", context)
    if layer is None:
        raise QgsProcessingException("no raster layer given (INPUT)")
    path = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source()).get("path") or ""
    if layer.providerType() != "gdal" or not path:
        raise QgsProcessingException(f"{layer.name()} is not a raster file: save it as a GeoTIFF first")
    return path


def output_path(algorithm: QgsProcessingAlgorithm, parameters, context) -> str:
    path = algorithm.parameterAsOutputLayer(parameters, "OUTPUT", context)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def vector_file(algorithm: QgsProcessingAlgorithm, name: str, parameters, context, feedback) -> str:
    """The vector parameter ``name``'s layer as geosam reads it: ``FILE|layername=NAME`` for a layer of
    a GeoPackage, else its file (QGIS writes a memory or filtered layer to a temporary file first)."""
    path, layer = algorithm.parameterAsCompatibleSourceLayerPathAndLayerName(
        parameters, name, context, ["gpkg", "shp", "geojson"], "gpkg", feedback
    )
    return layer_uri(path, layer) if layer else path


def layer_uri(path: str, layer: str) -> str:
    """``path|layername=layer`` for a GeoPackage (its other table is QGIS's styles), else the path."""
    return f"{path}|layername={layer}" if path.lower().endswith(".gpkg") else path


def work_folder(scene: str) -> str:
    """A work folder per scene in the QGIS profile: a cancelled run's tiles wait there for the rerun."""
    key = hashlib.sha1(os.path.abspath(scene).encode()).hexdigest()[:16]
    return str(Path(QgsApplication.qgisSettingsDirPath(), "geosam", "work", f"{Path(scene).stem}-{key}"))


def finish(path: str, layer: str, parameters, context: QgsProcessingContext, label: str) -> str:
    """The output's layer URI, loaded styled when the run ends if the user asked for it."""
    uri = layer_uri(path, layer)
    if context.willLoadLayerOnCompletion(path):
        details = context.layerToLoadOnCompletionDetails(path)
        context.setLayersToLoadOnCompletion({})  # loaded under its layer URI instead of the file
        load_styled(uri, details.name or label, context, "OUTPUT")
    return uri


class SegmentScene(GeosamAlgorithm):
    command = "segment"
    label = "Segment scene"
    help_text = (
        "Every object of a raster scene as polygons (geosam segment). The options are geosam's, with "
        "its defaults. Cancel stops the run; the finished tiles are kept, so running again on the same "
        "scene resumes."
    )
    leave_out = ("scene", "output", "overwrite", "preview", "preview_size", "labels", "work_dir",
                 "keep_work", "report_path")  # fmt: skip
    main = ("model", "points_per_side", "pred_iou_thresh", "stability_thresh", "tile_size", "overlap",
            "min_area", "simplify", "outline", "keep_background", "bands", "nodata", "resolution", "workers",
            "device")  # fmt: skip

    def fixed_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Scene"))
        self.addParameter(
            QgsProcessingParameterVectorDestination("OUTPUT", "Objects", QgsProcessing.TypeVectorPolygon)
        )
        work = QgsProcessingParameterFile(
            "WORK_DIR", "Work folder (finished tiles, for resuming)", QgsProcessingParameterFile.Folder,
            optional=True,
        )  # fmt: skip
        work.setHelp("Default: a folder per scene in the QGIS profile (geosam/work).")
        work.setFlags(work.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(work)

    def processAlgorithm(self, parameters, context, feedback):
        scene = raster_path(self, parameters, context)
        out = output_path(self, parameters, context)
        work = self.parameterAsFile(parameters, "WORK_DIR", context) or work_folder(scene)
        Path(work).parent.mkdir(parents=True, exist_ok=True)
        args = [scene, "-o", out, "--overwrite", "--work-dir", work]  # the run report: beside OUTPUT
        self.geosam(args + self.own_arguments(parameters, context, feedback), parameters, context, feedback)
        return {"OUTPUT": finish(out, "objects", parameters, context, "Objects")}

    def own_arguments(self, parameters, context, feedback) -> list[str]:
        """The command line options of the subclass's own parameters."""
        return []


class ClassesFromExamples(SegmentScene):
    command = "segment"
    key = "classes"
    label = "Classes from examples"
    help_text = (
        "Every object of a raster scene with its class, learnt from a few examples (geosam segment "
        "--examples): points on objects or polygons around them, in any CRS, with a class field; a class "
        "'background' marks what is none of them. Find-them-all also prompts where the scene looks like "
        "the examples. The class model is written beside the output (OUT.classes.json) for other scenes "
        "(Segment scene's Class model parameter)."
    )
    leave_out = (*SegmentScene.leave_out, "examples", "class_field", "class_model")
    main = ("keep", "find_all", "outline", *SegmentScene.main)

    def fixed_parameters(self) -> None:
        super().fixed_parameters()
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                "EXAMPLES", "Examples (points, polygons)",
                [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon],
            )
        )  # fmt: skip
        field = QgsProcessingParameterField(
            "CLASS_FIELD", "Class field", parentLayerParameterName="EXAMPLES", optional=True
        )
        field.setHelp(described(self.command).get("class_field", {}).get("help") or "")
        self.addParameter(field)
        self.addOutput(QgsProcessingOutputFile("CLASS_MODEL", "Class model"))

    def own_arguments(self, parameters, context, feedback) -> list[str]:
        examples = vector_file(self, "EXAMPLES", parameters, context, feedback)
        field = self.parameterAsString(parameters, "CLASS_FIELD", context)
        return ["--examples", examples, *(["--class-field", field] if field else [])]

    def processAlgorithm(self, parameters, context, feedback):
        done = super().processAlgorithm(parameters, context, feedback)
        out = Path(done["OUTPUT"].split("|")[0])
        return {**done, "CLASS_MODEL": str(out.with_name(f"{out.stem}.classes.json"))}


class SegmentAtPrompts(GeosamAlgorithm):
    command = "prompt"
    label = "Segment at prompts"
    help_text = (
        "The object at each prompt of a point or polygon layer, in any CRS (geosam prompt): points are "
        "positive or negative (a label field: 1/0), polygons are boxes; an id field groups prompts "
        "into one object."
    )
    leave_out = ("scene", "output", "overwrite", "prompt_file", "layer", "id_field", "label_field", "points",
                 "negative_points", "boxes", "prompt_crs")  # fmt: skip
    main = ("model", "bands", "device")

    def fixed_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Scene"))
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                "PROMPTS",
                "Prompts (points, boxes)",
                [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon],
            )
        )
        for name, what in (
            ("ID_FIELD", "Object id field"),
            ("LABEL_FIELD", "Label field (1 positive, 0 negative)"),
        ):
            self.addParameter(
                QgsProcessingParameterField(name, what, parentLayerParameterName="PROMPTS", optional=True)
            )
        self.addParameter(
            QgsProcessingParameterVectorDestination("OUTPUT", "Objects", QgsProcessing.TypeVectorPolygon)
        )

    def processAlgorithm(self, parameters, context, feedback):
        scene = raster_path(self, parameters, context)
        prompts, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, "PROMPTS", context, ["gpkg", "shp", "geojson"], "gpkg", feedback
        )
        out = output_path(self, parameters, context)
        args = [scene, "-o", out, "--overwrite", "--prompts", prompts] + (["--layer", layer] if layer else [])
        for name, option in (("ID_FIELD", "--id-field"), ("LABEL_FIELD", "--label-field")):
            field = self.parameterAsString(parameters, name, context)
            args += [option, field] if field else []
        self.geosam(args, parameters, context, feedback)
        return {"OUTPUT": finish(out, "objects", parameters, context, "Objects")}


class RunPipeline(GeosamAlgorithm):
    command = "run"
    label = "Run pipeline file"
    help_text = (
        "A pipeline file (YAML or TOML: scenes, settings, outputs) run over all its scenes (geosam run); "
        "scenes finished by an earlier run are skipped. The outputs are loaded when it ends."
    )
    leave_out = ("pipeline", "dry_run", "schema")
    main = ("workers", "overwrite")

    def fixed_parameters(self) -> None:
        self.addParameter(
            QgsProcessingParameterFile(
                "PIPELINE", "Pipeline file", fileFilter="Pipeline files (*.yaml *.yml *.toml)"
            )
        )
        self.addOutput(QgsProcessingOutputMultipleLayers("OUTPUTS", "Outputs"))

    def processAlgorithm(self, parameters, context, feedback):
        pipeline = self.parameterAsFile(parameters, "PIPELINE", context)
        events: list[dict[str, Any]] = []
        self.geosam([pipeline], parameters, context, feedback, events)
        written = [p for e in events if e.get("event") == "written" for p in e["paths"]]
        outputs = [layer_uri(p, "objects") for p in written]
        for uri in outputs:
            load_styled(uri, Path(uri.split("|")[0]).stem, context, "OUTPUTS")
        return {"OUTPUTS": outputs}


class Evaluate(GeosamAlgorithm):
    command = "evaluate"
    label = "Evaluate against a reference layer"
    help_text = (
        "Predicted polygons scored against reference ones (geosam evaluate): one-to-one matches at IoU "
        "of at least the threshold; precision, recall, F1 and mean IoU, overall, by size and by class. "
        "Writes a JSON report and the outcomes (true positives, false positives, misses), styled."
    )
    leave_out = ("pred", "ref", "output", "outcomes", "overwrite", "aoi", "class_field")
    main = ("iou", "size_bins")
    scores = ("precision", "recall", "f1", "mean_iou")

    def fixed_parameters(self) -> None:
        self.addParameter(
            QgsProcessingParameterVectorLayer("PRED", "Predicted objects", [QgsProcessing.TypeVectorPolygon])
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer("REF", "Reference objects", [QgsProcessing.TypeVectorPolygon])
        )
        self.addParameter(
            QgsProcessingParameterField(
                "CLASS_FIELD", "Class field", parentLayerParameterName="REF", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                "AOI", "Area of interest", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(QgsProcessingParameterFileDestination("REPORT", "Report", "JSON (*.json)"))
        self.addParameter(
            QgsProcessingParameterVectorDestination("OUTCOMES", "Outcomes", QgsProcessing.TypeVectorPolygon)
        )
        for score in self.scores:
            self.addOutput(QgsProcessingOutputNumber(score.upper(), title(score)))

    def processAlgorithm(self, parameters, context, feedback):
        def source(name: str) -> str:
            return vector_file(self, name, parameters, context, feedback)

        pred, ref = source("PRED"), source("REF")
        report = self.parameterAsFileOutput(parameters, "REPORT", context)
        outcomes = self.parameterAsOutputLayer(parameters, "OUTCOMES", context)
        args = [pred, ref, "-o", report, "--outcomes", outcomes, "--overwrite"]
        if parameters.get("AOI") not in (None, ""):
            args += ["--aoi", source("AOI")]
        field = self.parameterAsString(parameters, "CLASS_FIELD", context)
        args += ["--class-field", field] if field else []
        table = self.geosam(args, parameters, context, feedback)
        feedback.pushInfo(table)
        overall = json.loads(Path(report).read_text())["overall"]
        results = {score.upper(): overall.get(score) for score in self.scores}
        return {
            "REPORT": report,
            "OUTCOMES": finish(outcomes, "outcomes", parameters, context, "Outcomes"),
            **results,
        }


ALGORITHMS = (SegmentScene, ClassesFromExamples, SegmentAtPrompts, RunPipeline, Evaluate)
