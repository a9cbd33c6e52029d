"""Object classes learnt from a few examples: a classifier over the model's descriptors of objects, and
each class's prototype for find-them-all.

The classifier is a logistic regression (scikit-learn's, L2, lbfgs: deterministic) on unit descriptors
(``geosam.models.features``), its classes balanced: a handful of examples against hundreds of other
objects (the docs' benchmarks page compares it with a nearest prototype and nearest neighbours). An
object far smaller or larger than a class's examples (``SIZE_RANGE``) is not of that class. A
class model is saved as JSON (numbers and names only, versioned; nothing in it runs when read) and
applies to any scene that the same encoder embeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geosam.atomic import write_bytes
from geosam.errors import InputError
from geosam.models.base import Find
from geosam.settings import CLASSES

FORMAT = "geosam-class-model"
VERSION = 1
BACKGROUND = "background"  # the class of what is none of the analyst's classes
FIND_MARGIN = 0.9  # a cell proposes a prompt from this share of the least similar example's best cell
REGULARIZATION = 1.0  # scikit-learn's C: inverse strength of the L2 penalty
SIZE_RANGE = 3.0  # a class's objects are from its smallest example's area over this to its largest's times it


@dataclass(frozen=True, eq=False)
class ClassModel:
    """Classes learnt from examples: what ``predict`` says of each object's descriptor.

    Attributes:
        classes: The classes ``predict`` answers with, ``background`` among them.
        weights: (K, C) weights of the logistic regression (one row for two classes: the second's).
        bias: (K,) its intercepts.
        prototypes: (P, C) unit mean descriptor of each class's examples, background left out.
        thresholds: (P,) the cell similarity to its prototype that proposes a find-them-all prompt.
        encoder: The encoder whose embeddings the descriptors come from (``SamModel.encoder_id``).
        examples: How many examples each class was learnt from.
        sizes: (P, 2) the least and greatest area of each class's examples in m², ``prototypes``' order;
            None where the scene it was learnt on has no CRS.
    """

    classes: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray
    prototypes: np.ndarray
    thresholds: np.ndarray
    encoder: str
    examples: dict[str, int]
    sizes: np.ndarray | None = None

    @property
    def found(self) -> tuple[str, ...]:
        """The classes that find-them-all looks for (all but the background), in ``prototypes``' order."""
        return tuple(c for c in self.classes if c != BACKGROUND)

    @property
    def _found_columns(self) -> np.ndarray:
        """Where the classes of ``found`` are in ``classes`` (and in ``probabilities``' columns)."""
        return np.array([self.classes.index(c) for c in self.found])

    def probabilities(self, descriptors: np.ndarray, areas: np.ndarray | None = None) -> np.ndarray:
        """(N, K) probability of each class for N descriptors (N, C); with the objects' ``areas`` (N,) in
        m², a class's is 0 where the area is out of its size range (``SIZE_RANGE``), the rest rescaled."""
        z = np.asarray(descriptors, np.float64) @ self.weights.T + self.bias
        if len(self.classes) == 2:
            second = 1 / (1 + np.exp(-z[:, 0]))
            p = np.stack([1 - second, second], 1)
        else:
            z -= z.max(1, keepdims=True)
            e = np.exp(z)
            p = e / e.sum(1, keepdims=True)
        if areas is None or self.sizes is None:
            return p
        return _sized(p, np.asarray(areas, np.float64), self.sizes, self._found_columns)

    def predict(
        self,
        descriptors: np.ndarray,
        min_score: float = CLASSES.min_class_score,
        areas: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each descriptor's class (object array) and its probability, ``class_score`` (``probabilities``,
        with ``areas``): the most probable class other than the background where that probability is at
        least ``min_score``, else the background (where the model has one)."""
        if not len(descriptors):
            return np.array([], object), np.array([], np.float64)
        p = self.probabilities(descriptors, areas)
        found = self._found_columns
        best = found[p[:, found].argmax(1)]
        rows = np.arange(len(p))
        if BACKGROUND in self.classes:
            best = np.where(p[rows, best] >= min_score, best, self.classes.index(BACKGROUND))
        return np.array(self.classes, object)[best], p[rows, best]

    def find(self, most: int = Find.most) -> Find:
        """Find-them-all's proposals for these classes (``AutomaticParams.find``)."""
        return Find(
            tuple(tuple(float(v) for v in row) for row in self.prototypes),
            tuple(float(t) for t in self.thresholds),
            most,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "encoder": self.encoder, "classes": list(self.classes),
            "examples": self.examples, "weights": self.weights.tolist(), "bias": self.bias.tolist(),
            "prototypes": self.prototypes.tolist(), "thresholds": self.thresholds.tolist(),
            "sizes": None if self.sizes is None else self.sizes.tolist(),
        }  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the class model as JSON (atomically)."""
        path = Path(path)
        write_bytes(path, json.dumps(self.to_json(), indent=1).encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> ClassModel:
        """A class model saved by ``save``; ``InputError`` for anything else."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise InputError(f"cannot read the class model {path}: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(
                f"{path} is not a class model (not JSON): give a .json file a run with --examples wrote"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(
                f"{path} is not a geosam class model: give a .json file a run with --examples wrote"
            )
        if data.get("version") != VERSION:
            raise InputError(
                f"{path}: class model version {data.get('version')!r}, this geosam reads {VERSION}: learn it again with --examples"
            )
        try:
            model = cls(
                tuple(str(c) for c in data["classes"]), np.array(data["weights"], np.float64),
                np.array(data["bias"], np.float64), np.array(data["prototypes"], np.float32),
                np.array(data["thresholds"], np.float64), str(data["encoder"]),
                {str(k): int(v) for k, v in data["examples"].items()},
                None if data.get("sizes") is None else np.array(data["sizes"], np.float64),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(
                f"{path}: a damaged class model ({exc}): learn it again with --examples"
            ) from None
        model.check()
        return model

    def check(self) -> None:
        """Shapes that fit together, or ``InputError``."""
        k, p = len(self.classes), len(self.found)
        rows = 1 if k == 2 else k
        ok = (
            k >= 2 and len(set(self.classes)) == k and self.weights.ndim == 2
            and self.weights.shape[0] == rows and self.bias.shape == (rows,)
            and self.prototypes.shape == (p, self.weights.shape[1]) and self.thresholds.shape == (p,)
            and (self.sizes is None or (self.sizes.shape == (p, 2) and bool((self.sizes > 0).all())))
        )  # fmt: skip
        if not ok:
            raise InputError(
                "a damaged class model (its arrays do not fit its classes): learn it again with --examples"
            )

    def check_encoder(self, encoder: str) -> None:
        """``InputError`` unless the descriptors this model was learnt from come from ``encoder``."""
        if encoder != self.encoder:
            raise InputError(
                f"the class model was learnt with the encoder {self.encoder}, this run's model is {encoder}: "
                "use the model it was learnt with, or learn it again with --examples"
            )


def fit(
    descriptors: np.ndarray,
    labels: np.ndarray,
    encoder: str,
    thresholds: dict[str, float],
    alike: tuple[np.ndarray, np.ndarray] | None = None,
    sizes: dict[str, tuple[float, float]] | None = None,
) -> ClassModel:
    """Learn a class model from labelled descriptors (N, C); ``labels`` holds ``background`` for the
    negatives; ``thresholds``: each class's find-them-all similarity; ``alike``: more descriptors and
    labels for the regression alone (the model's own outlines of the examples), not counted as
    examples nor part of the prototypes; ``sizes``: each class's least and greatest example area in m²."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, object)
    more, named = alike if alike is not None else (np.zeros((0, descriptors.shape[1])), np.array([], object))
    classes = sorted(set(labels), key=lambda c: (c == BACKGROUND, c))
    if len(classes) < 2:
        raise InputError(
            f"examples of one class ({classes[0]}) and nothing else to tell it from: add examples of "
            f"another class or of '{BACKGROUND}'"
        )
    index = np.array([classes.index(c) for c in np.concatenate([labels, np.asarray(named, object)])])
    model = LogisticRegression(C=REGULARIZATION, class_weight="balanced", max_iter=1000)
    model.fit(np.concatenate([descriptors, more]).astype(np.float64), index)
    found, protos = prototypes(descriptors, labels)
    counts = {c: int((labels == c).sum()) for c in classes}
    return ClassModel(
        tuple(classes), model.coef_.astype(np.float64), model.intercept_.astype(np.float64),
        protos.astype(np.float32), np.array([thresholds[c] for c in found], np.float64), encoder, counts,
        None if sizes is None else np.array([sizes[c] for c in found], np.float64),
    )  # fmt: skip


def _sized(p: np.ndarray, areas: np.ndarray, sizes: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``p`` (N, K) with the probability of the classes in ``columns`` 0 where ``areas`` are out of their
    ``sizes`` widened by ``SIZE_RANGE``, each row rescaled to sum to 1."""
    low, high = sizes[:, 0] / SIZE_RANGE, sizes[:, 1] * SIZE_RANGE
    out = np.zeros(p.shape, bool)
    out[:, columns] = (areas[:, None] < low) | (areas[:, None] > high)
    left = np.where(out, 0.0, p)
    total = left.sum(1, keepdims=True)
    # out of every class's range and no background to fall to: the regression's word stands
    return np.where(total > 0, left / np.maximum(total, 1e-300), p)


def prototypes(descriptors: np.ndarray, labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The classes other than the background, sorted, and each one's unit mean descriptor (P, C)."""
    found = sorted(set(labels) - {BACKGROUND})
    if not found:
        raise InputError(f"every example is of class '{BACKGROUND}': give examples of the objects wanted")
    return found, np.stack([_unit(np.asarray(descriptors)[labels == c].mean(0)) for c in found])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)
