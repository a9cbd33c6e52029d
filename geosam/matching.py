"""Objects of two dates matched: same, changed, appeared, disappeared, split or merged.

Candidate pairs are the objects whose outlines intersect (an STRtree query), each with its
intersection's area and IoU. Groups are then taken in this order, each object in one group only:

1. split: an object of the first date with two or more objects of the second that each lie at least
   ``part_share`` inside it and together cover ``part_share`` of it, none of them alone the same
   object (IoU below ``same_iou``: a field with a new building inside stays the same field);
2. merged: the same, the dates' roles swapped;
3. one to one, in descending IoU: same from ``same_iou``, changed from ``match_iou``;
4. what is left: disappeared (first date) and appeared (second date).

A group's IoU compares the union of its objects at each date, its area change the union's areas.
The changed area is where a group that is not the same covers ground at one date only: gained
(second date) and lost (first date); the outline jitter of objects that stay the same is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from geosam.errors import InputError
from geosam.settings import CHANGE

STATUSES = ("same", "changed", "appeared", "disappeared", "split", "merged")


@dataclass(frozen=True)
class Pairs:
    """Intersecting objects of two dates: their positions, intersection areas and IoUs (CRS units²)."""

    first: np.ndarray
    second: np.ndarray
    inter: np.ndarray
    iou: np.ndarray


@dataclass(frozen=True)
class Group:
    """Objects of two dates that are one object through time (positions in each date's array)."""

    status: str
    first: tuple[int, ...]
    second: tuple[int, ...]


def pairs(first: np.ndarray, second: np.ndarray) -> Pairs:
    """The intersecting pairs of two arrays of polygons, with their intersection areas and IoUs."""
    i, j = shapely.STRtree(second).query(first, predicate="intersects")
    inter = shapely.area(shapely.intersection(first[i], second[j]))
    union = shapely.area(first)[i] + shapely.area(second)[j] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep = inter > 0
    return Pairs(i[keep], j[keep], inter[keep], iou[keep])


def match(
    first: np.ndarray, second: np.ndarray, same_iou: float = CHANGE.same_iou,
    match_iou: float = CHANGE.match_iou, part_share: float = CHANGE.part_share,
) -> list[Group]:  # fmt: skip
    """The groups of two dates' polygons (same CRS), each object in exactly one (see the module)."""
    if match_iou > same_iou:
        raise InputError(f"--match-iou {match_iou:g} is above --same-iou {same_iou:g}: give at most that")
    found = pairs(first, second)
    taken = [np.zeros(len(first), bool), np.zeros(len(second), bool)]
    groups = _parts(found, shapely.area(first), shapely.area(second), taken, same_iou, part_share)
    groups += _one_to_one(found, taken, same_iou, match_iou)
    groups += [Group("disappeared", (int(i),), ()) for i in np.flatnonzero(~taken[0])]
    groups += [Group("appeared", (), (int(j),)) for j in np.flatnonzero(~taken[1])]
    return groups


def _parts(
    found: Pairs, first_area: np.ndarray, second_area: np.ndarray, taken: list[np.ndarray], same_iou: float,
    share: float,
) -> list[Group]:  # fmt: skip
    """Splits (a first-date whole, second-date parts), then merges (the roles swapped)."""
    groups = []
    for status, whole, part, areas in (
        ("split", 0, 1, (first_area, second_area)),
        ("merged", 1, 0, (second_area, first_area)),
    ):
        ends = (found.first, found.second)
        wholes, parts = ends[whole], ends[part]
        inside = found.inter >= share * areas[1][parts]
        for w in np.unique(wholes[inside]):
            mine = inside & (wholes == w) & ~taken[part][parts]
            pieces = parts[mine]
            if taken[whole][w] or len(pieces) < 2 or found.iou[mine].max() >= same_iou:
                continue
            if found.inter[mine].sum() < share * areas[0][w]:
                continue
            taken[whole][w], taken[part][pieces] = True, True
            ids = (int(w),), tuple(int(p) for p in sorted(pieces))
            groups.append(Group(status, *(ids if whole == 0 else ids[::-1])))
    return groups


def _one_to_one(found: Pairs, taken: list[np.ndarray], same_iou: float, match_iou: float) -> list[Group]:
    """Free pairs in descending IoU from ``match_iou``, each taken while both objects are free."""
    groups = []
    for k in np.lexsort((found.second, found.first, -found.iou)):
        i, j, iou = found.first[k], found.second[k], found.iou[k]
        if iou < match_iou or taken[0][i] or taken[1][j]:
            continue
        taken[0][i], taken[1][j] = True, True
        groups.append(Group("same" if iou >= same_iou else "changed", (int(i),), (int(j),)))
    return groups


def unions(groups: list[Group], first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each group's union of objects at the first and at the second date (an empty polygon where none)."""
    empty = shapely.Polygon()

    def union(geometries: np.ndarray, ids: tuple[int, ...]) -> shapely.Geometry:
        return (
            geometries[ids[0]]
            if len(ids) == 1
            else shapely.union_all(geometries[list(ids)])
            if ids
            else empty
        )

    return (
        np.array([union(first, g.first) for g in groups], dtype=object),
        np.array([union(second, g.second) for g in groups], dtype=object),
    )


def changed_area(
    groups: list[Group], before: np.ndarray, after: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the groups that are not the same cover ground at one date only (``before``, ``after``: the
    groups' unions): group positions, kinds (gained, lost) and polygons; empty pieces left out."""
    changing = np.array([g.status != "same" for g in groups], bool)
    index = np.flatnonzero(changing)
    gained = shapely.difference(after[index], before[index])
    lost = shapely.difference(before[index], after[index])
    rows = np.concatenate([index, index])
    kinds = np.array(["gained"] * len(index) + ["lost"] * len(index), dtype=object)
    geometries = np.concatenate([gained, lost])
    keep = ~shapely.is_empty(geometries) & (shapely.area(geometries) > 0)
    return rows[keep], kinds[keep], geometries[keep]


def tracks(
    steps: list[list[Group]], counts: list[int]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Tracks through a series from the groups of each pair of consecutive dates (``counts``: objects
    per date): per date and object, its track id, event (born, same, changed, split, merged), parent
    tracks (split and merged: the tracks it came from) and fate at the next date (same, changed,
    split, merged, died; empty at the last date). A split or a merge ends its tracks and starts new ones.
    """
    ids = [np.arange(1, counts[0] + 1)]
    events = [np.full(counts[0], "born", dtype=object)]
    parents = [np.full(counts[0], "", dtype=object)]
    fates = []
    last = counts[0]
    for groups, n in zip(steps, counts[1:], strict=True):
        mine, event, parent = (
            np.zeros(n, np.int64),
            np.full(n, "born", dtype=object),
            np.full(n, "", dtype=object),
        )
        fate = np.full(len(ids[-1]), "died", dtype=object)
        for g in groups:
            fate[list(g.first)] = g.status if g.first and g.second else "died"
            if g.status in ("same", "changed"):
                mine[g.second[0]], event[g.second[0]] = ids[-1][g.first[0]], g.status
                continue
            for j in g.second:
                last += 1
                mine[j], event[j] = last, "born" if g.status == "appeared" else g.status
                parent[j] = ",".join(str(ids[-1][i]) for i in g.first)
        ids.append(mine)
        events.append(event)
        parents.append(parent)
        fates.append(fate)
    fates.append(np.full(counts[-1], "", dtype=object))
    return ids, events, parents, fates
