"""Tile files are data: every field of a piece round-trips, and nothing in a file can run code."""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from geosam import tilefile
from geosam.seams import Piece
from geosam.tilefile import TileFileError, dumps, loads

SQUARE = box(3, 4, 10, 12)
HOLED = Polygon([(0, 0), (20, 0), (20, 20), (0, 20)], [[(5, 5), (6, 5), (6, 6), (5, 6)]])


def _sample(annotation: str, i: int):
    """A value that is not a field's default, by the kind its annotation names."""
    if "Geometry" in annotation:
        return [HOLED, MultiPolygon([SQUARE, box(30, 30, 31.5, 32.25)])][i % 2]
    if "ndarray" in annotation.lower():
        return np.linspace(-1, 1, 256, dtype=np.float32) * (i + 1)
    kinds = {"bool": i % 2 == 0, "float": 0.1 + i / 3, "int": 7 + i, "str": f"source-{i}"}
    for kind, value in kinds.items():
        if annotation.startswith(kind):
            return value
    raise AssertionError(f"add a sample value for a field annotated {annotation!r}")


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, shapely.Geometry):
        return isinstance(b, shapely.Geometry) and a.wkb == b.wkb
    return type(a) is type(b) and a == b


def test_every_field_of_a_piece_round_trips():
    # made from Piece's own fields, so that a field added to Piece is covered without editing this test
    fields = dataclasses.fields(Piece)
    pieces = [Piece(**{f.name: _sample(str(f.type), i) for f in fields}) for i in range(3)]
    meta = {"key": "k", "row": 1, "col": 2, "funnel": {"tiles": 1, "masks": 3}}
    back_meta, back = loads(dumps(meta, pieces, Piece), Piece)
    assert back_meta == meta and len(back) == len(pieces)
    for piece, again in zip(pieces, back, strict=True):
        for f in fields:
            assert _equal(getattr(piece, f.name), getattr(again, f.name)), f.name


@dataclasses.dataclass(frozen=True)
class Rich:
    """The kinds of fields a piece may carry: geometry, an optional descriptor, scalars, text, None."""

    full: shapely.Geometry | None
    descriptor: np.ndarray | None
    source: str
    score: float
    count: int
    whole: bool
    level: np.float32 | None = None
    nothing: None = None


def test_fields_of_every_kind_round_trip_with_none_among_them():
    records = [
        Rich(SQUARE, np.arange(256, dtype=np.float32), "sam", 0.5, 3, True, np.float32(0.25)),
        Rich(None, None, "", float("nan"), -1, False),
        Rich(HOLED, np.ones((2, 3), np.uint8), "ünïcode", 1e-300, 2**40, True, None),
    ]
    _, back = loads(dumps({}, records, Rich), Rich)
    for record, again in zip(records, back, strict=True):
        for f in dataclasses.fields(Rich):
            a, b = getattr(record, f.name), getattr(again, f.name)
            if isinstance(a, float) and np.isnan(a):
                assert isinstance(b, float) and np.isnan(b)
            elif isinstance(a, np.generic):
                assert type(a) is type(b) and a == b
            else:
                assert _equal(a, b), f.name
    assert loads(dumps({"n": 0}, [], Piece), Piece) == ({"n": 0}, [])


def test_values_that_are_not_data_are_refused_when_written():
    with pytest.raises(TypeError, match="cannot be kept"):
        dumps({}, [Rich(SQUARE, np.array([object()]), "x", 0.0, 0, False)], Rich)
    with pytest.raises(TypeError, match="cannot be kept"):
        dumps({}, [Rich(SQUARE, None, {"a": 1}, 0.0, 0, False)], Rich)  # type: ignore[arg-type]


class _Plant:
    """Unpickled, it creates the file ``path``: what a planted pickle could do, harmlessly."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _file(header: dict, body: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return tilefile.MAGIC + struct.pack("<Q", len(text)) + text + body


def _edited(data: bytes, change) -> bytes:
    """A tile file with its header changed by ``change`` (its body, and so its checksum, kept)."""
    start = len(tilefile.MAGIC) + 8
    (size,) = struct.unpack("<Q", data[len(tilefile.MAGIC) : start])
    header = json.loads(data[start : start + size])
    change(header)
    return _file(header, data[start + size :])


def test_values_of_the_wrong_kind_are_refused_even_with_a_good_checksum():
    good = dumps({}, [Piece(SQUARE, True, 0.9, 0.8)], Piece)
    assert loads(_edited(good, lambda h: None), Piece)[1] == [Piece(SQUARE, True, 0.9, 0.8)]
    changes = [
        lambda h: h["fields"]["score"].update(values=["0.9"]),
        lambda h: h["fields"]["complete"].update(values=[1]),
        lambda h: h["fields"].update(full={"kind": "json", "values": [SQUARE.wkt]}),
        lambda h: h["fields"]["stability"].update(values=[None]),
    ]
    for change in changes:
        with pytest.raises(TileFileError, match="holds a"):
            loads(_edited(good, change), Piece)


def test_planted_and_damaged_files_are_refused_without_running_anything(tmp_path):
    ran = tmp_path / "ran"
    planted = pickle.dumps(_Plant(str(ran)))
    good = dumps({"key": "k"}, [Piece(SQUARE, True, 0.9, 0.8)], Piece)
    body = len(good) - 1
    pickled_array = np.frombuffer(pickle.dumps(_Plant(str(ran))), np.uint8)
    object_column = {"kind": "array", "items": [{"dtype": "|O", "shape": [1], "offset": 0, "size": 8}]}
    bad = [
        planted,
        tilefile.MAGIC + planted,
        good[:-3],  # truncated
        good[:body] + bytes([good[body] ^ 1]),  # one bit flipped
        good.replace(b'"format":3', b'"format":2'),
        _file(
            {
                "format": 3,
                "meta": {},
                "count": 1,
                "fields": {"full": object_column},
                "body": {"size": 0, "crc32": 0},
            }
        ),
        _file(
            {
                "format": 3,
                "meta": {},
                "count": 1,
                "fields": {"__class__": {"kind": "json", "values": [1]}},
                "body": {"size": 0, "crc32": 0},
            }
        ),
        _file(
            {
                "format": 3,
                "meta": {},
                "count": 1,
                "fields": {"full": {"kind": "pickle", "values": [1]}},
                "body": {"size": 0, "crc32": 0},
            }
        ),
        _file(
            {
                "format": 3,
                "meta": {},
                "count": 1,
                "body": {"size": len(pickled_array), "crc32": 0},
                "fields": {"full": {"kind": "wkb", "sizes": [len(pickled_array)], "offset": 0}},
            },
            pickled_array.tobytes(),
        ),
    ]
    for data in bad:
        with pytest.raises(TileFileError):
            loads(data, Piece)
    assert not ran.exists(), "a planted file ran code"
    pickle.loads(
        planted
    ).close()  # the oracle: unpickled, the planted file does run code  # proves the planted file is live
    assert ran.exists()
