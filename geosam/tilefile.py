"""The tile file: one finished tile's results as data that cannot run code when read.

A work folder may sit on a shared file system that others can write to, so a tile file is read as
untrusted data: no pickle. A file is ``MAGIC``, the length of a JSON header (8 bytes, little endian),
the header, then a body of raw bytes that the header points into::

    {"format": 3, "meta": {...}, "count": N, "fields": {NAME: COLUMN, ...},
     "body": {"size": BYTES, "crc32": CHECKSUM}}

``meta`` holds plain JSON values (the key, the tile, counts) and ``fields`` the records (pieces),
column by column, one column per field of their dataclass, whatever its fields are:

- ``{"kind": "json", "values": [...]}``: None, bool, int, float, str (floats exactly, NaN included);
- ``{"kind": "wkb", "sizes": [...], "offset": O}``: shapely geometries (or None: size -1) as WKB;
- ``{"kind": "array", "items": [null | {"dtype": "<f4", "shape": [...], "offset": O, "size": S}]}``:
  numpy arrays of plain dtypes (never ``object``), read with ``np.frombuffer``.

Reading builds only the dataclass it is given, from the fields it declares, each holding a value of
the kind its annotation names; anything else (another magic, format or field, a bad checksum, an
object dtype, a truncated body, a text where a number belongs) raises ``TileFileError``.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from typing import Any, TypeVar

import numpy as np
import shapely

MAGIC = b"GEOSAM-TILE\n"
FORMAT = 3  # bump when the layout changes; geosam.fingerprint folds it into the run key
HEADER = struct.Struct("<Q")
JSON_TYPES = (type(None), bool, int, float, str)

T = TypeVar("T")


class TileFileError(ValueError):
    """The bytes are not a tile file this geosam wrote (damaged, planted or of another version)."""


def dumps(meta: dict[str, Any], records: list, cls: type) -> bytes:
    """``meta`` (JSON values) and ``records`` (instances of the dataclass ``cls``) as a tile file."""
    body = bytearray()
    fields = {f.name: _column([getattr(r, f.name) for r in records], body) for f in dataclasses.fields(cls)}
    header = {
        "format": FORMAT, "meta": meta, "count": len(records), "fields": fields,
        "body": {"size": len(body), "crc32": zlib.crc32(body)},
    }  # fmt: skip
    text = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + HEADER.pack(len(text)) + text + bytes(body)


def loads(data: bytes, cls: type[T]) -> tuple[dict[str, Any], list[T]]:
    """A tile file's ``meta`` and records, built as ``cls``; ``TileFileError`` if it is not one."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise TileFileError("not a geosam tile file")
    start = len(MAGIC) + HEADER.size
    if len(data) < start:
        raise TileFileError("truncated")
    (size,) = HEADER.unpack(view[len(MAGIC) : start])
    if start + size > len(data):
        raise TileFileError("truncated header")
    try:
        header = json.loads(bytes(view[start : start + size]))
    except ValueError as exc:
        raise TileFileError(f"unreadable header: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TileFileError(
            f"format {header.get('format') if isinstance(header, dict) else '?'}, not {FORMAT}"
        )
    body = view[start + size :]
    declared = header.get("body") or {}
    if declared.get("size") != len(body) or declared.get("crc32") != zlib.crc32(body):
        raise TileFileError("damaged body (size or checksum)")
    try:
        return header["meta"], _records(header, body, cls)
    except (KeyError, TypeError, ValueError, IndexError, shapely.errors.ShapelyError) as exc:
        raise TileFileError(f"bad records: {type(exc).__name__}: {exc}") from None


def _records(header: dict, body: memoryview, cls: type[T]) -> list[T]:
    count = header["count"]
    if not isinstance(count, int) or count < 0:
        raise ValueError("bad count")
    declared = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    stored = header["fields"]
    unknown = set(stored) - set(declared)
    if unknown:
        raise ValueError(f"fields {sorted(unknown)} are not {cls.__name__}'s")
    missing = [n for n, f in declared.items() if n not in stored and _required(f)]
    if missing:
        raise ValueError(f"{cls.__name__}'s fields {missing} are missing")
    columns = {name: _values(column, body, count) for name, column in stored.items()}
    for name, values in columns.items():
        allowed = _kinds(str(declared[name].type))
        wrong = [type(v).__name__ for v in values if allowed and not isinstance(v, allowed)]
        if wrong:
            raise ValueError(f"{cls.__name__}.{name} holds a {wrong[0]}")
    return [cls(**{name: values[i] for name, values in columns.items()}) for i in range(count)]


KINDS: dict[str, tuple[type, ...]] = {
    "None": (type(None),), "bool": (bool, np.bool_), "int": (int, np.integer), "float": (float, int, np.floating),
    "str": (str,), "shapely.Geometry": (shapely.Geometry,), "np.ndarray": (np.ndarray,),
}  # fmt: skip


def _kinds(annotation: str) -> tuple[type, ...]:
    """The types a field annotated ``annotation`` (e.g. "np.ndarray | None") may hold; () for any."""
    kinds: tuple[type, ...] = ()
    for part in annotation.split("|"):
        part = part.strip()
        if part.startswith(("np.float", "np.int", "np.uint", "np.bool")):
            kinds += (np.generic,)
        elif part in KINDS:
            kinds += KINDS[part]
        else:
            return ()  # a kind this module does not know: not checked
    return kinds


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _column(values: list, body: bytearray) -> dict[str, Any]:
    """One field's values as a column (see the module's docstring); raises TypeError for other types."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, shapely.Geometry) for v in present):
        blobs = shapely.to_wkb(np.array(values, dtype=object))  # one call for the column; None stays None
        offset = len(body)
        body += b"".join(b for b in blobs if b is not None)
        sizes = [len(b) if b is not None else -1 for b in blobs]
        return {"kind": "wkb", "sizes": sizes, "offset": offset}
    if present and all(isinstance(v, np.ndarray | np.generic) for v in present):
        items: list[dict | None] = []
        for value in values:
            if value is None:
                items.append(None)
                continue
            array = np.asarray(value)  # tobytes: C order whatever the array's layout
            if array.dtype.hasobject:
                raise TypeError("arrays of Python objects cannot be kept in a tile file")
            item = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": len(body)}
            item["scalar"] = isinstance(value, np.generic)
            body += array.tobytes()
            item["size"] = array.nbytes
            items.append(item)
        return {"kind": "array", "items": items}
    for value in values:
        if not isinstance(value, JSON_TYPES):
            raise TypeError(f"a {type(value).__name__} cannot be kept in a tile file")
    return {"kind": "json", "values": values}


def _values(column: dict, body: memoryview, count: int) -> list:
    kind = column["kind"]
    if kind == "json":
        values = column["values"]
        if not isinstance(values, list) or not all(isinstance(v, JSON_TYPES) for v in values):
            raise ValueError("bad values")
    elif kind == "wkb":
        blobs, offset = [], column["offset"]
        for size in column["sizes"]:
            blobs.append(None if size == -1 else bytes(_slice(body, offset, size)))
            offset += max(size, 0)
        values = list(shapely.from_wkb(np.array(blobs, dtype=object)))  # None stays None
    elif kind == "array":
        values = [None if item is None else _array(item, body) for item in column["items"]]
    else:
        raise ValueError(f"unknown column kind {kind!r}")
    if len(values) != count:
        raise ValueError("a column's length is not the count")
    return values


def _array(item: dict, body: memoryview) -> np.ndarray | np.generic:
    if not isinstance(item["dtype"], str):
        raise ValueError("a dtype is a string")
    dtype = np.dtype(item["dtype"])  # parsed, never code; never an object array (below)
    if dtype.hasobject:
        raise ValueError("object arrays are refused")
    shape = tuple(int(n) for n in item["shape"])
    raw = _slice(body, item["offset"], item["size"])
    array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return array[()] if item.get("scalar") else array


def _slice(body: memoryview, offset: object, size: object) -> memoryview:
    if not isinstance(offset, int) or not isinstance(size, int) or offset < 0 or size < 0:
        raise ValueError("bad offset")
    if offset + size > len(body):
        raise ValueError("a value runs past the body")
    return body[offset : offset + size]
