"""How objects look: outlines coloured by score, the same in QGIS (a QML style) and in previews; an
evaluation's outcomes coloured by kind."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from xml.sax.saxutils import quoteattr

import numpy as np

# Bright enough to read over imagery, low to high score: red, orange, yellow, green, cyan.
PALETTE = ((230, 40, 40), (255, 140, 0), (255, 230, 0), (110, 220, 70), (0, 220, 255))
FIELD = "score"
OUTLINE_MM = 0.6
# An evaluation's outcomes (geosam.evaluation): value of the outcome field, legend label, outline colour.
OUTCOMES = (
    ("true_positive", "true positive: found", (60, 200, 60)),
    ("false_positive", "false positive: not in the reference", (255, 140, 0)),
    ("miss", "miss: reference not found", (230, 40, 230)),
)
OUTCOME_FIELD = "outcome"
# Objects through time (geosam.matching): status or changed-area kind, legend label, outline colour.
STATUSES = (
    ("same", "same", (160, 160, 160)),
    ("changed", "changed", (255, 230, 0)),
    ("appeared", "appeared", (60, 200, 60)),
    ("disappeared", "disappeared", (230, 40, 40)),
    ("split", "split", (0, 220, 255)),
    ("merged", "merged", (230, 40, 230)),
)
AREA_KINDS = (
    ("gained", "gained: covered at the later date only", (60, 200, 60)),
    ("lost", "lost: at the earlier date only", (230, 40, 40)),
)
EVENTS = (
    ("born", "born", (60, 200, 60)),
    ("same", "same", (160, 160, 160)),
    ("changed", "changed", (255, 230, 0)),
    ("split", "split from", (0, 220, 255)),
    ("merged", "merged from", (230, 40, 230)),
)


@dataclass(frozen=True)
class Style:
    """A QGIS style as a GeoPackage stores it (its ``layer_styles`` table): name, description, QML."""

    name: str
    description: str
    qml: str


def classes(scores: np.ndarray, n: int = len(PALETTE)) -> list[tuple[float, float]]:
    """``n`` equal-interval classes over the scores, rounded outwards to 0.01 (0..1 when there are none)."""
    scores = np.asarray(scores, np.float64)
    scores = scores[np.isfinite(scores)]
    low, high = (
        (math.floor(scores.min() * 100) / 100, math.ceil(scores.max() * 100) / 100)
        if len(scores)
        else (0.0, 1.0)
    )
    if high <= low:
        high = low + 0.01
    edges = np.linspace(low, high, n + 1)
    return [(float(a), float(b)) for a, b in pairwise(edges)]


def class_of(scores: np.ndarray, ranges: list[tuple[float, float]]) -> np.ndarray:
    """The class index of each score (0-based); scores outside the ranges go to the nearest end."""
    inner = np.array([high for _, high in ranges[:-1]])
    return np.searchsorted(inner, np.asarray(scores, np.float64), side="left").clip(0, len(ranges) - 1)


def qml(scores: np.ndarray, field: str = FIELD) -> str:
    """A QGIS 3.x QML: no fill, outlines graduated by ``field`` over the classes of ``scores``."""
    ranges = classes(scores)
    rows = "\n".join(
        f'   <range lower="{low:.4f}" upper="{high:.4f}" symbol="{i}" render="true"'
        f' label="{low:.2f} - {high:.2f}"/>'
        for i, (low, high) in enumerate(ranges)
    )
    symbols = "\n".join(_symbol(i, colour) for i, colour in enumerate(PALETTE[: len(ranges)]))
    return _document(
        "",
        f""" <renderer-v2 type="graduatedSymbol" attr={quoteattr(field)} graduatedMethod="GraduatedColor" \
symbollevels="0" enableorderby="0" forceraster="0" referencescale="-1">
  <ranges>
{rows}
  </ranges>
  <symbols>
{symbols}
  </symbols>
  <classificationMethod id="EqualInterval">
   <symmetricMode enabled="0" symmetrypoint="0" astride="0"/>
   <labelFormat format="%1 - %2" labelprecision="2" trimtrailingzeroes="0"/>
   <parameters><Option/></parameters>
   <extraInformation/>
  </classificationMethod>
""",
    )


def outcome_qml(field: str = OUTCOME_FIELD) -> str:
    """A QGIS 3.x QML: no fill, outlines categorised by ``field``: true positives, false positives, misses."""
    return categories_qml(field, OUTCOMES)


def categories_qml(
    field: str,
    categories: tuple[tuple[str, str, tuple[int, int, int]], ...],
    temporal: tuple[str, str] | None = None,
) -> str:
    """A QGIS 3.x QML: no fill, outlines categorised by ``field`` (value, label, colour each); with
    ``temporal`` (start and end date fields), the layer's temporal properties too, so that QGIS's
    temporal controller shows each feature from its start date until its end date."""
    rows = "\n".join(
        f'   <category value={quoteattr(value)} symbol="{i}" label={quoteattr(label)} render="true"/>'
        for i, (value, label, _) in enumerate(categories)
    )
    symbols = "\n".join(_symbol(i, colour) for i, (_, _, colour) in enumerate(categories))
    return _document(
        _temporal(*temporal) if temporal else "",
        f""" <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" enableorderby="0" \
forceraster="0" referencescale="-1">
  <categories>
{rows}
  </categories>
  <symbols>
{symbols}
  </symbols>
""",
    )


def _temporal(start: str, end: str) -> str:
    """QGIS 3.22's temporal properties of a vector layer (``QgsVectorLayerTemporalProperties``):
    features from their ``start`` date field (included) to their ``end`` one (excluded)."""
    return (
        f' <temporal enabled="1" mode="2" limitMode="0" startField={quoteattr(start)} endField={quoteattr(end)}'
        ' startExpression="" endExpression="" durationField="" durationUnit="min" fixedDuration="0"'
        ' accumulate="0">\n  <fixedRange>\n   <start></start>\n   <end></end>\n  </fixedRange>\n </temporal>\n'
    )


def _document(temporal: str, renderer: str) -> str:
    """A QGIS 3.x QML document of polygons around a renderer's opening tag and its symbols (and
    the layer's temporal properties, when given)."""
    categories = "Symbology|Temporal" if temporal else "Symbology"
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="{categories}">
{temporal}{renderer}  <rotation/>
  <sizescale/>
 </renderer-v2>
 <blendMode>0</blendMode>
 <featureBlendMode>0</featureBlendMode>
 <layerGeometryType>2</layerGeometryType>
</qgis>
"""


def _symbol(index: int, colour: tuple[int, int, int]) -> str:
    props = {
        "color": "0,0,0,0",
        "style": "no",
        "outline_color": ",".join(map(str, colour)) + ",255",
        "outline_style": "solid",
        "outline_width": str(OUTLINE_MM),
        "outline_width_unit": "MM",
        "joinstyle": "round",
    }
    options = "\n".join(f'      <Option type="QString" name="{k}" value="{v}"/>' for k, v in props.items())
    legacy = "\n".join(f'     <prop k="{k}" v="{v}"/>' for k, v in props.items())  # QGIS < 3.26 reads these
    return f"""   <symbol type="fill" name="{index}" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
{options}
     </Option>
{legacy}
    </layer>
   </symbol>"""
