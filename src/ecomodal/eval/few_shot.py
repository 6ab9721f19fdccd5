"""Few-shot classification: k labelled examples per class, nearest centroid and linear probes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import InvalidArgumentError
from ecomodal.eval.common import check_counts, eval_rows, resolve_model, unseen_classes
from ecomodal.eval.probe import dropped_text, feature_sets, label_values, parse_feature_sets
from ecomodal.eval.registry import EvalContext, TaskOption, register_task
from ecomodal.eval.zero_shot import class_prototypes
from ecomodal.io.reader import TableLike
from ecomodal.options import check_range, parse_numbers
from ecomodal.report import Section
from ecomodal.seeding import mix_seed

METHODS = ("centroid", "ridge", "logistic")


def sample_support(
    labels: np.ndarray, candidates: np.ndarray, shots: int, rng: np.random.Generator
) -> np.ndarray:
    """``shots`` random rows of ``candidates`` for each class that has that many there."""
    picks = []
    for name in sorted(set(labels[candidates])):
        pool = candidates[labels[candidates] == name]
        if len(pool) >= shots:
            picks.append(rng.choice(pool, shots, replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.array([], dtype=np.int64)


def _predict(method: str, train_x, train_y, test_x, seed: int) -> np.ndarray:
    if method == "centroid":
        names, protos = class_prototypes(train_x, train_y)
        return np.asarray(names, dtype=object)[np.argmax(test_x @ protos.T, axis=1)]
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    if method == "ridge":
        head = RidgeClassifier(alpha=1.0)
    elif method == "logistic":
        head = LogisticRegression(max_iter=2000, random_state=seed)
    else:
        raise InvalidArgumentError(
            f"Unknown few-shot method {method!r}; expected one of {METHODS}."
        )
    return make_pipeline(MinMaxScaler(), head).fit(train_x, train_y).predict(test_x)


@renamed_arguments(table="data")
def few_shot(
    data: TableLike | None = None,
    *,
    label: str,
    train: TableLike | None = None,
    test: TableLike | None = None,
    features: str | Sequence[str] = ("image",),
    model: Any = None,
    shots: Sequence[int] = (1, 5, 10),
    repeats: int = 5,
    methods: Sequence[str] = ("centroid", "ridge"),
    split: str | np.ndarray = "published",
    visible: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """k-shot accuracy of ``label``, mean and standard deviation over ``repeats`` seeded draws.

    For each k, k support rows per class are drawn from the train (and val) rows (classes with
    fewer are left out); the test rows of the remaining classes are classified by nearest
    centroid (cosine to the normalised class mean) and/or a MinMax-scaled ridge or logistic
    probe. ``features`` as in :func:`~ecomodal.eval.probe.feature_sets` (several modalities: their
    TaxaBind fusion). Draw r of k uses seed ``mix_seed(seed, k, r)``. Or ``train`` and ``test``
    instead of ``data``: support rows from the training table, queries from the test table.
    Test rows whose class no training row has are left out and said
    (``dropped_test_classes``: per feature set, the classes and the number of rows).
    """
    shots = check_counts(shots, "shots")
    check_range(repeats, "repeats", minimum=1, integer=True)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InvalidArgumentError(
            f"methods must be some of {', '.join(METHODS)}; got {list(methods)!r}."
        )
    rows_in = eval_rows(data, train, test, task="few-shot", split=split, columns=[label], seed=seed)
    batch = rows_in.batch
    labels, known = label_values(batch, label)
    prom3e = resolve_model(model)
    sides = rows_in.sides(seed=seed)
    sets = feature_sets(
        batch, features, model=prom3e, visible=visible, combine=("fusion",), seed=seed
    )
    results: dict[str, Any] = {}
    dropped: dict[str, Any] = {}
    for name, (values, rows) in sets.items():
        values, rows = values[known[rows]], rows[known[rows]]
        y = labels[rows]
        is_train = np.isin(sides[rows], ("train", "val"))
        unseen, dropped[name] = unseen_classes(y, is_train, sides[rows] == "test")
        train = np.flatnonzero(is_train)
        test = np.flatnonzero((sides[rows] == "test") & ~unseen)
        per_feature: dict[str, Any] = {}
        for k in shots:
            runs: dict[str, list[float]] = {m: [] for m in methods}
            classes = 0
            for r in range(repeats):
                rng = np.random.default_rng(mix_seed(seed, k, r))
                support = sample_support(y, train, k, rng)
                classes = len(set(y[support]))
                query = test[np.isin(y[test], y[support])]
                if classes < 2 or len(query) == 0:
                    break
                for method in methods:
                    predicted = _predict(method, values[support], y[support], values[query], seed)
                    runs[method].append(float(np.mean(predicted == y[query])))
            per_feature[str(k)] = {
                m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": len(v)}
                for m, v in runs.items()
                if v
            } | {"classes": classes}
        results[name] = per_feature
    return {
        "label": label,
        "repeats": repeats,
        "results": results,
        "dropped_test_classes": dropped,
    }


def _section(results: Mapping[str, Any]) -> Section:
    rows, dropped = [], {}
    for label, result in results.items():
        for feature, entry in result.get("dropped_test_classes", {}).items():
            dropped[f"{label}, {feature}"] = entry
        for feature, by_k in result["results"].items():
            for k, entry in by_k.items():
                for method, stats in entry.items():
                    if isinstance(stats, dict):
                        rows.append(
                            {
                                "label": label,
                                "features": feature,
                                "shots": k,
                                "method": method,
                                **stats,
                            }
                        )
    text = " ".join(["Mean and std over seeded draws.", dropped_text(dropped)])
    return Section("Few-shot classification", text.strip(), rows)


@register_task(
    name="few-shot",
    description="k labelled examples per class: nearest centroid and ridge, for every label.",
    options=[
        TaskOption(
            "features",
            ("image",),
            "one feature set (several modalities: their fusion)",
            lambda text: parse_feature_sets(text)[0],
        ),
        TaskOption(
            "shots",
            (1, 5, 10),
            "k values",
            lambda text: parse_numbers(text, int, option="--option shots"),
        ),
        TaskOption("repeats", 5, "seeded draws per k", int),
    ],
    section=_section,
    order=20,
)
def _run(
    context: EvalContext, features: str | Sequence[str], shots: Sequence[int], repeats: int
) -> dict[str, Any]:
    return {
        label: few_shot(
            context.table_rows,
            label=label,
            features=features,
            model=context.model,
            shots=shots,
            repeats=repeats,
            split=context.split,
            seed=context.seed,
        )
        for label in context.labels
    }
