"""Put imported weights into a freshly initialised tree, and say what was loaded, initialised, ignored.

Every importer ends here: it hands over the fresh tree of the target model, the (partial) tree
of what it imported, where each part came from, and the source keys it left out with the
reason. Shapes must agree leaf by leaf; a mismatch is an error that names the parameter.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

Path = tuple[str, ...]


@dataclasses.dataclass
class ImportReport:
    """Counts are (arrays, values) per part of the model; `ignored` maps a reason to source keys;
    `task` names the model the params are for (see `task_models.TASKS`)."""
    task: str = "model"
    loaded: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    initialised: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    ignored: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)   # loaded part -> where from
    notes: list[str] = dataclasses.field(default_factory=list)

    def format(self) -> str:
        lines = [f"params for task {self.task!r}", _section("loaded", self.loaded, self.sources),
                 _section("freshly initialised", self.initialised)]
        total_ignored = sum(len(v) for v in self.ignored.values())
        lines.append(f"ignored from the sources: {total_ignored} keys")
        for reason, keys in self.ignored.items():
            lines.append(f"  {len(keys):6d} keys  {reason}  (e.g. {', '.join(keys[:3])})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __str__ = format


@dataclasses.dataclass
class Imported:
    """What one importer read: a partial params tree (looped layout, top-level names as in the target's
    core or heads), where each part came from, source keys left out (reason -> keys) and notes."""
    params: dict
    sources: dict[str, str]
    ignored: dict[str, list[str]]
    notes: list[str]


UNMATCHED = "unmatched: no place for them in this model"


def check_unmatched(unmatched: list[str], source: str, strict: bool, ignored: dict[str, list[str]]) -> None:
    """Source keys nobody recognised: an error listing them when `strict`, else reported as ignored."""
    if not unmatched:
        return
    if strict:
        raise ValueError(f"{source}: {len(unmatched)} keys match nothing in the model (wrong file or config?): "
                         f"{sorted(unmatched)[:20]}{' ...' if len(unmatched) > 20 else ''}; "
                         "pass strict=False (--allow-unmatched) to ignore them")
    ignored.setdefault(UNMATCHED, []).extend(sorted(unmatched))


def _section(title: str, counts: dict[str, tuple[int, int]], sources: dict[str, str] | None = None) -> str:
    arrays, values = sum(a for a, _ in counts.values()), sum(v for _, v in counts.values())
    lines = [f"{title}: {arrays} arrays, {values:,} values"]
    for part, (a, v) in counts.items():
        origin = f"  <- {sources[part]}" if sources and part in sources else ""
        lines.append(f"  {part:40s} {a:5d} arrays {v:14,d} values{origin}")
    return "\n".join(lines)


def flatten_params(tree: dict, prefix: Path = ()) -> dict[Path, np.ndarray]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_params(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _part(path: Path) -> str:
    """The module a parameter belongs to, with layer numbers folded ('cross_modal_text_layers')."""
    core = path[1:] if path[0] == "bridgetower" else path
    return re.sub(r"_\d+$", "", core[0])


def _sub_part(path: Path) -> str:
    core = path[1:] if path[0] == "bridgetower" else path
    return _part(path) + "/" + re.sub(r"_\d+$", "", core[1]) if len(core) > 2 else _part(path)


def _count(paths: list[Path], leaves: dict[Path, np.ndarray], name) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for p in paths:
        a, v = counts.get(name(p), (0, 0))
        counts[name(p)] = (a + 1, v + int(np.size(leaves[p])))
    return counts


def merge_into_fresh(fresh: dict, loaded: dict, task: str, sources: dict[str, str] | None = None,
                     ignored: dict[str, list[str]] | None = None,
                     notes: list[str] | None = None) -> tuple[dict, ImportReport]:
    """`fresh` with every leaf that `loaded` has replaced (cast to the fresh leaf's dtype).

    `loaded` must only hold paths that exist in `fresh`, with the same shapes. `sources` labels
    loaded parts (as named in the report, e.g. "vision_model") with where they came from.
    """
    fresh_leaves, loaded_leaves = flatten_params(fresh), flatten_params(loaded)
    problems = []
    for path, value in loaded_leaves.items():
        name = "/".join(path)
        if path not in fresh_leaves:
            problems.append(f"{name}: not a parameter of the target model")
        elif tuple(np.shape(value)) != tuple(np.shape(fresh_leaves[path])):
            problems.append(f"{name}: imported shape {tuple(np.shape(value))}, the model expects "
                            f"{tuple(np.shape(fresh_leaves[path]))}")
    if problems:
        raise ValueError("imported weights do not fit the model config:\n  " + "\n  ".join(problems[:20]))
    merged = {p: (np.asarray(loaded_leaves[p], dtype=v.dtype) if p in loaded_leaves else v)
              for p, v in fresh_leaves.items()}
    fully_fresh = {_part(p) for p in fresh_leaves} - {_part(p) for p in loaded_leaves}
    fresh_paths = [p for p in fresh_leaves if p not in loaded_leaves]
    report = ImportReport(
        task=task, loaded=_count(list(loaded_leaves), merged, _part),
        initialised=_count(fresh_paths, merged, lambda p: _part(p) if _part(p) in fully_fresh else _sub_part(p)),
        ignored=dict(ignored or {}), sources=dict(sources or {}), notes=list(notes or []))
    return unflatten_params(merged), report


def unflatten_params(leaves: dict[Path, np.ndarray]) -> dict:
    tree: dict = {}
    for path, value in leaves.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree
