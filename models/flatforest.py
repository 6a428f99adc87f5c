"""A fitted scaling + isolation forest as flat numpy arrays: scored without scikit-learn.

Loading a model through skops costs far more than using it (``netwarden score`` spent ~3 s
loading 18 models, plus ~1.3 s importing scikit-learn and skops, on 6 h of flows it read and
windowed in ~1.5 s), so each saved model also gets an ``.npz`` of plain arrays beside its skops file, read with
``np.load(allow_pickle=False)``: nothing in it is code, and its SHA-256 is in the (signed)
manifest like every other file's.

What is kept is exactly what :meth:`sklearn.pipeline.Pipeline.score_samples` uses for the
pipeline :func:`netwarden.models.forest.fit_model` builds (``RobustScaler`` then
``IsolationForest`` on every feature):

* the scaler's ``center`` and ``scale`` (float64, one per column);
* per tree, concatenated in tree order with ``tree_offsets`` (n_trees + 1) marking where each
  starts: ``children_left`` / ``children_right`` (the tree's own node indices, -1 at a leaf),
  ``feature``, ``threshold`` (float64, compared with the float32 input as scikit-learn's
  trees compare them), ``node_depth`` (the forest's ``_decision_path_lengths``) and
  ``average_path_length`` (``_average_path_length_per_tree``: of each node's training samples);
* ``denominator``, the forest's ``n_estimators * c(max_samples)``, and ``max_samples``.

:meth:`FlatForest.score` does scikit-learn's arithmetic in its order: scaling on a float64 copy,
the rows as float32, every tree's leaf (all trees at once, one level per step), the leaf's
``depth + average_path_length - 1.0`` summed tree by tree, then ``2 ** -(sum / denominator)``.
The result is scikit-learn's ``-score_samples`` bit for bit (``tests/test_flat_forest.py``);
:meth:`FlatForest.from_pipeline` checks that on probe rows before a file is written.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = ["FLAT_FORMAT", "FlatForest", "FlatForestError"]

#: The layout of the arrays in a file; a file with another is refused (the skops file is used).
FLAT_FORMAT: Final = 1
_BLOCK: Final = 1 << 16  # (row, tree) pairs walked at once
_MAX_DEPTH: Final = 64  # IsolationForest grows trees to ceil(log2(max_samples)) <= 17 levels
#: The arrays of a file besides ``format`` and ``max_samples``, in the order they are written.
_ARRAYS: Final = (
    "center",
    "scale",
    "tree_offsets",
    "children_left",
    "children_right",
    "feature",
    "threshold",
    "node_depth",
    "average_path_length",
    "denominator",
)


class FlatForestError(ValueError):
    """A flat forest file (or pipeline) that cannot be used; the message says why."""


@dataclass(frozen=True, eq=False)
class FlatForest:
    """The arrays a model's forest score needs; see the module's docstring."""

    center: np.ndarray  # float64 (n_features,)
    scale: np.ndarray  # float64 (n_features,)
    tree_offsets: np.ndarray  # int64 (n_trees + 1,)
    children_left: np.ndarray  # int32, per tree's own nodes, -1 at a leaf
    children_right: np.ndarray  # int32
    feature: np.ndarray  # int32, -2 at a leaf (scikit-learn's TREE_UNDEFINED)
    threshold: np.ndarray  # float64
    node_depth: np.ndarray  # uint8: scikit-learn's decision path length to the node
    average_path_length: np.ndarray  # float64: c(n) of the node's training samples
    denominator: np.ndarray  # float64 (1,)
    max_samples: int

    def __post_init__(self) -> None:
        self._check()
        # The walk's own layout: the nodes renumbered level by level, all trees together, each
        # inner node's children side by side (right = left + 1), so a step is one lookup and an
        # addition; a leaf's "left child" is itself and its threshold +inf, so walking on past a
        # leaf stays there and every row takes the same number of steps.
        offsets = self.tree_offsets.astype(np.intp)
        starts = np.repeat(offsets[:-1], np.diff(offsets))
        inner = self.children_left >= 0
        old_left = np.where(inner, self.children_left + starts, -1).astype(np.intp)
        old_right = np.where(inner, self.children_right + starts, -1).astype(np.intp)
        nodes = len(inner)
        new_of = np.empty(nodes, dtype=np.intp)
        level = offsets[:-1]  # old indices of this level's nodes, in their new order
        new_of[level] = np.arange(len(level))
        placed = len(level)
        levels = 0
        while True:
            parents = level[inner[level]]
            if not len(parents):
                break
            level = np.column_stack([old_left[parents], old_right[parents]]).ravel()
            new_of[level] = placed + np.arange(len(level))
            placed += len(level)
            levels += 1
        order = np.empty(nodes, dtype=np.intp)  # old index of each new one
        order[new_of] = np.arange(nodes)
        inner_new = inner[order]
        left = np.where(inner_new, new_of[old_left[order]], np.arange(nodes))
        threshold = np.where(inner_new, self.threshold[order], np.inf)
        feature = np.where(inner_new, self.feature[order], 0)
        # what scikit-learn adds for a row ending in the node (an int64 depth as float64)
        path = self.node_depth.astype(np.int64) + self.average_path_length - 1.0
        object.__setattr__(self, "_levels", levels)
        object.__setattr__(self, "_left", left.astype(np.intp))
        object.__setattr__(self, "_threshold", threshold.astype(np.float64))
        object.__setattr__(self, "_feature", feature.astype(np.intp))
        object.__setattr__(self, "_path", path[order])

    @property
    def n_features(self) -> int:
        return len(self.center)

    @property
    def n_trees(self) -> int:
        return len(self.tree_offsets) - 1

    # ------------------------------------------------------------------------------- scoring

    def score(self, x: np.ndarray) -> np.ndarray:
        """The anomaly score (scikit-learn's ``-score_samples`` of the pipeline) of rows ``x``
        as the pipeline takes them, before scaling (float64, finite, ``n_features`` columns):
        higher is more anomalous."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} columns, got shape {x.shape}")
        scaled = np.array(x, dtype=np.float64)  # RobustScaler.transform, on a copy
        scaled -= self.center
        scaled /= self.scale
        rows = np.ascontiguousarray(scaled, dtype=np.float32)  # the trees' input type
        n, trees = x.shape[0], self.n_trees
        depths = np.zeros(n, order="f")
        block = max(1, _BLOCK // trees)  # rows walked at once: temporaries stay in cache
        for at in range(0, n, block):
            part = rows[at : at + block]
            m = len(part)
            values = part.T.ravel()  # value of column f of row r at f * m + r
            node = np.repeat(np.arange(trees, dtype=np.intp), m).reshape(trees, m)
            row = np.arange(m, dtype=np.intp)
            column = self._feature * m  # where a node's column starts in ``values``
            at_value = np.empty_like(node)
            past = np.empty(node.shape, dtype=bool)
            for _ in range(self._levels):
                # float32 values against float64 thresholds, as scikit-learn's trees compare
                # them; past the threshold is the right child
                np.take(column, node, out=at_value)
                at_value += row
                np.greater(values.take(at_value), self._threshold.take(node), out=past)
                node = self._left.take(node)
                node += past
            paths = self._path[node]
            total = depths[at : at + m]
            for t in range(trees):  # tree by tree, scikit-learn's order of the sum
                total += paths[t]
        denominator = self.denominator
        return 2 ** (
            -np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0)
        )

    # ------------------------------------------------------------------------- making, files

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline, *, check: bool = True) -> FlatForest:
        """The flat arrays of a fitted pipeline as :func:`~netwarden.models.forest.fit_model`
        builds it (``scale``: RobustScaler centring and scaling, ``forest``: IsolationForest on
        every feature). Reads attributes private to scikit-learn's IsolationForest (as of 1.9);
        raises :class:`FlatForestError` when they are missing or the pipeline is another one,
        and (``check``) when the flat scores differ from scikit-learn's on probe rows."""
        try:
            if [name for name, _ in pipeline.steps] != ["scale", "forest"]:
                raise FlatForestError(f"not a scale + forest pipeline: {pipeline.steps!r}"[:200])
            scale = pipeline.named_steps["scale"]
            forest = pipeline.named_steps["forest"]
            if not (scale.with_centering and scale.with_scaling):
                raise FlatForestError("the scaler does not both centre and scale")
            n_features = int(forest.n_features_in_)
            if forest._max_features != n_features:
                raise FlatForestError("the forest subsamples features per tree")
            from sklearn.ensemble._iforest import _average_path_length

            trees = [estimator.tree_ for estimator in forest.estimators_]
            depths = [np.asarray(d) for d in forest._decision_path_lengths]
            averages = [
                np.asarray(a, dtype=np.float64) for a in forest._average_path_length_per_tree
            ]
            sizes = [t.node_count for t in trees]
            if [len(d) for d in depths] != sizes or [len(a) for a in averages] != sizes:
                raise FlatForestError("the forest's path lengths do not match its trees")
            if any(d.min(initial=1) < 1 or d.max(initial=1) > _MAX_DEPTH for d in depths):
                raise FlatForestError("the forest's trees are deeper than expected")
            flat = cls(
                center=np.array(scale.center_, dtype=np.float64),
                scale=np.array(scale.scale_, dtype=np.float64),
                tree_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                children_left=np.concatenate([t.children_left for t in trees]).astype(np.int32),
                children_right=np.concatenate([t.children_right for t in trees]).astype(np.int32),
                feature=np.concatenate([t.feature for t in trees]).astype(np.int32),
                threshold=np.concatenate([t.threshold for t in trees]).astype(np.float64),
                node_depth=np.concatenate(depths).astype(np.uint8),
                average_path_length=np.concatenate(averages),
                denominator=np.asarray(
                    len(trees) * _average_path_length([forest._max_samples]), dtype=np.float64
                ).reshape(1),
                max_samples=int(forest._max_samples),
            )
        except FlatForestError:
            raise
        except (AttributeError, ImportError, KeyError, TypeError, ValueError) as exc:
            raise FlatForestError(f"cannot flatten the pipeline ({exc})"[:300]) from None
        if check:
            probes = flat._probes()
            if not np.array_equal(flat.score(probes), -pipeline.score_samples(probes)):
                raise FlatForestError("flat scores differ from scikit-learn's on probe rows")
        return flat

    def _probes(self) -> np.ndarray:
        """Rows around and far from the training data (in raw units of the scaler), and every
        threshold of the first tree crossed on both sides: what the self-check scores."""
        rng = np.random.default_rng(0)
        spread = rng.normal(0.0, 1.0, size=(192, self.n_features)) * rng.choice(
            [0.5, 2.0, 10.0], size=(192, 1)
        )
        probes = [self.center + spread * self.scale, self.center[None, :]]
        stop = int(self.tree_offsets[1]) if self.n_trees else 0
        for i in range(stop):
            f = int(self.feature[i])
            if f < 0:
                continue
            for t in (np.nextafter(self.threshold[i], -np.inf), self.threshold[i] + 1e-3):
                row = self.center.copy()
                row[f] = float(t) * self.scale[f] + self.center[f]
                probes.append(row[None, :])
        return np.vstack(probes)

    def save(self, path: str | Path) -> None:
        """Write the arrays to ``path`` (an uncompressed ``.npz``: loading is a read)."""
        arrays: dict[str, Any] = {name: getattr(self, name) for name in _ARRAYS}
        arrays["format"] = np.asarray(FLAT_FORMAT, dtype=np.int64)
        arrays["max_samples"] = np.asarray(self.max_samples, dtype=np.int64)
        with open(path, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: str | Path, *, data: bytes | None = None) -> FlatForest:
        """The arrays in ``path`` (or its bytes ``data``, already read and checked), read with
        ``allow_pickle=False``; :class:`FlatForestError` for anything but a file
        :meth:`save` writes."""
        source: Any = io.BytesIO(data) if data is not None else path
        try:
            npz = np.load(source, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):  # a lone .npy array
                raise FlatForestError("not an .npz archive of arrays")
            with npz:
                names = set(npz.files)
                expected = {*_ARRAYS, "format", "max_samples"}
                if names != expected:
                    missing, extra = sorted(expected - names), sorted(names - expected)
                    raise FlatForestError(f"arrays missing {missing}, unexpected {extra}"[:200])
                arrays = {name: npz[name] for name in expected}
        except FlatForestError:
            raise
        except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise FlatForestError(f"not a readable flat forest file ({exc})"[:300]) from None
        fmt = arrays.pop("format")
        if fmt.shape != () or fmt.dtype.kind not in "iu" or int(fmt) != FLAT_FORMAT:
            raise FlatForestError(f"flat forest format {fmt!r}, expected {FLAT_FORMAT}"[:200])
        max_samples = arrays.pop("max_samples")
        if max_samples.shape != () or max_samples.dtype.kind not in "iu":
            raise FlatForestError("max_samples: expected an integer")
        return cls(max_samples=int(max_samples), **arrays)

    # --------------------------------------------------------------------------- validation

    def _check(self) -> None:
        """Refuse arrays a tree walk could go wrong on (types, shapes, indices, cycles)."""

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise FlatForestError(what)

        for name, kinds, ndim in (
            ("center", "f", 1),
            ("scale", "f", 1),
            ("tree_offsets", "iu", 1),
            ("children_left", "iu", 1),
            ("children_right", "iu", 1),
            ("feature", "iu", 1),
            ("threshold", "f", 1),
            ("node_depth", "iu", 1),
            ("average_path_length", "f", 1),
            ("denominator", "f", 1),
        ):
            a = getattr(self, name)
            need(
                isinstance(a, np.ndarray) and a.dtype.kind in kinds and a.ndim == ndim,
                f"{name}: expected a {ndim}-d array of kind {kinds!r}",
            )
        n_features = len(self.center)
        need(n_features > 0 and len(self.scale) == n_features, "center/scale: lengths differ")
        need(bool(np.isfinite(self.center).all() and np.isfinite(self.scale).all()),
             "center/scale: not finite")  # fmt: skip
        need(bool((self.scale != 0).all()), "scale: zero")
        offsets = self.tree_offsets
        nodes = len(self.children_left)
        need(len(offsets) >= 2 and offsets[0] == 0 and offsets[-1] == nodes, "tree_offsets")
        sizes = np.diff(offsets)
        need(bool((sizes > 0).all()), "tree_offsets: an empty tree")
        for name in ("children_right", "feature", "threshold", "node_depth",
                     "average_path_length"):  # fmt: skip
            need(len(getattr(self, name)) == nodes, f"{name}: expected {nodes} nodes")
        need(len(self.denominator) == 1 and bool(np.isfinite(self.denominator).all()),
             "denominator")  # fmt: skip
        local = np.arange(nodes, dtype=np.int64) - np.repeat(offsets[:-1], sizes)
        size = np.repeat(sizes, sizes)
        left = self.children_left.astype(np.int64)
        right = self.children_right.astype(np.int64)
        leaf = left < 0
        need(bool((left[leaf] == -1).all() and (right[leaf] == -1).all()), "leaves: children")
        inner = ~leaf
        # children come after their parent in their tree: every walk ends, within the tree
        for child in (left, right):
            need(
                bool(((child[inner] > local[inner]) & (child[inner] < size[inner])).all()),
                "children: outside their tree or not after their parent",
            )
        # every node but a root is the child of exactly one node: each tree is a tree
        starts = np.repeat(offsets[:-1], sizes)
        parents_of = np.bincount(
            np.concatenate([left[inner], right[inner]]) + np.concatenate([starts[inner]] * 2),
            minlength=nodes,
        )
        need(
            len(parents_of) == nodes and bool((parents_of == (local != 0)).all()),
            "children: a node with no parent or more than one",
        )
        feature = self.feature.astype(np.int64)
        need(bool(((feature[inner] >= 0) & (feature[inner] < n_features)).all()), "feature")
        need(bool(np.isfinite(self.threshold[inner]).all()), "threshold: not finite")
        depth = self.node_depth.astype(np.int64)
        need(bool((depth >= 1).all() and (depth <= _MAX_DEPTH).all()), "node_depth")
        need(bool((depth[local == 0] == 1).all()), "node_depth: a root's is not 1")
        for child in (left, right):  # a child is one level below its parent
            parents = np.flatnonzero(inner)
            kids = parents - local[parents] + child[parents]
            need(bool((depth[kids] == depth[parents] + 1).all()), "node_depth: not per level")
        need(bool((np.isfinite(self.average_path_length) & (self.average_path_length >= 0)).all()),
             "average_path_length")  # fmt: skip
        need(self.max_samples >= 1, "max_samples")
