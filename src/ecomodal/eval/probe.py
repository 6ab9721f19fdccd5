"""Linear probes on raw, fused, ProM3E-hidden and ProM3E-completed embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import InvalidArgumentError
from ecomodal.eval.common import (
    check_optional_count,
    eval_rows,
    model_inputs,
    normalise,
    require_model,
    resolve_model,
    unseen_classes,
)
from ecomodal.eval.registry import EvalContext, TaskOption, register_task
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.reader import TableLike
from ecomodal.models.prom3e import ProM3E
from ecomodal.options import parse_list
from ecomodal.report import Section, bar_chart

HIDDEN = "prom3e-hidden"
COMPLETED = "prom3e-completed"
RIDGE_ALPHAS = (0.1, 1.0, 10.0)


def default_visible(batch: EmbeddingBatch, model: ProM3E) -> list[str]:
    """Every modality of the table the model knows, except ``text`` (it names the taxon)."""
    return [m for m in model.modalities if m in batch.embeddings and m != "text"]


def feature_sets(
    batch: EmbeddingBatch,
    features: str | Sequence[str],
    *,
    model: ProM3E | None = None,
    visible: Sequence[str] | None = None,
    combine: Sequence[str] = ("fusion", "concat"),
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named feature matrices and the rows they cover: ``{name: (X [n, F], rows [n])}``.

    ``features`` is one modality or a tuple of them (several: TaxaBind's ``fusion``, the
    normalised sum, and/or ``concat``, the concatenation, as ``combine`` says), or
    ``"prom3e-hidden"`` (every hidden token flattened: mu, logvar, registers, visible tokens) or
    ``"prom3e-completed"`` (every completed modality concatenated), both from ``visible``
    (default :func:`default_visible`) on the rows that have all of it.
    """
    if isinstance(features, str) and features in (HIDDEN, COMPLETED):
        prom3e = require_model(model, f"features={features!r}")
        vis = list(visible) if visible else default_visible(batch, prom3e)
        rows = np.flatnonzero(batch.has_all(vis))
        emb, present = model_inputs(batch.select(rows), prom3e)
        done = prom3e.complete(
            emb, visible=vis, n_samples=0, seed=seed, present=present, return_hidden=True
        )
        if features == HIDDEN:
            values = done.hidden.reshape(len(rows), -1)
        else:
            values = done.embeddings.reshape(len(rows), -1)
        return {f"{features}[{'+'.join(vis)}]": (np.asarray(values, np.float32), rows)}
    names = [features] if isinstance(features, str) else list(features)
    rows = np.flatnonzero(batch.has_all(names))
    sub = batch.select(rows)
    if len(names) == 1:
        return {names[0]: (normalise(sub.embeddings[names[0]]), rows)}
    out = {}
    key = "+".join(names)
    if "fusion" in combine:
        out[f"fusion[{key}]"] = (sub.fuse(names), rows)
    if "concat" in combine:
        out[f"concat[{key}]"] = (
            np.concatenate([normalise(sub.embeddings[m]) for m in names], axis=1),
            rows,
        )
    if not out:
        raise InvalidArgumentError(
            f"combine must include 'fusion' and/or 'concat'; got {list(combine)}."
        )
    return out


#: Training rows of a probe at most (a seeded sample beyond): bounds memory on large tables.
MAX_TRAIN_ROWS = 20_000


def make_classifier(classifier: str = "ridge", *, seed: int = 0) -> Any:
    """MinMax scaling then ``RidgeClassifierCV(alphas 0.1, 1, 10)`` (as published) or a
    logistic regression."""
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    if classifier == "ridge":
        head = RidgeClassifierCV(alphas=RIDGE_ALPHAS)
    elif classifier == "logistic":
        head = LogisticRegression(max_iter=2000, random_state=seed)
    else:
        raise InvalidArgumentError(
            f"Unknown classifier {classifier!r}; expected 'ridge' or 'logistic'."
        )
    return make_pipeline(MinMaxScaler(), head)


def classification_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 (scikit-learn's definitions)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    truth = np.asarray(truth).astype(str)
    predicted = np.asarray(predicted).astype(str)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }


def label_values(batch: EmbeddingBatch, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The label column as strings and the mask of rows where it is set."""
    values = batch.column(label)
    known = np.array([v is not None and v == v and str(v) != "" for v in values], dtype=bool)
    return np.asarray([str(v) for v in values], dtype=object), known


def fit_probes(
    sets: dict[str, tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    known: np.ndarray,
    sides: np.ndarray,
    *,
    classifier: str = "ridge",
    max_train_rows: int | None = MAX_TRAIN_ROWS,
    seed: int = 0,
    drop_unseen: bool = False,
) -> dict[str, Any]:
    """Fit one probe per feature set of :func:`feature_sets` on its train and val rows (of
    ``sides``) with a known label, and score it on its test rows.

    At most ``max_train_rows`` training rows are used (a seeded sample), which bounds the memory
    of wide features (ProM3E hidden tokens: thousands of columns) on large tables; every test row
    is scored. ``None`` uses them all. ``drop_unseen`` leaves out the test rows whose class no
    training row has, and says which (``dropped_test_classes``: classes and rows).
    """
    results: dict[str, Any] = {}
    for name, (values, rows) in sets.items():
        keep = known[rows]
        values, rows = values[keep], rows[keep]
        train = np.isin(sides[rows], ("train", "val"))
        test = sides[rows] == "test"
        dropped = None
        if drop_unseen:
            unseen, dropped = unseen_classes(labels[rows], train, test)
            test &= ~unseen
        if train.sum() < 2 or test.sum() < 1 or len(set(labels[rows][train])) < 2:
            results[name] = {"error": "too few labelled train/test rows", "n": int(len(rows))}
            continue
        available = int(train.sum())
        if max_train_rows is not None and available > max_train_rows:
            chosen = np.random.default_rng(seed).choice(
                np.flatnonzero(train), size=max_train_rows, replace=False
            )
            train = np.zeros_like(train)
            train[chosen] = True
        fitted = make_classifier(classifier, seed=seed).fit(
            values[train].astype(np.float32, copy=False), labels[rows][train]
        )
        scores = classification_scores(labels[rows][test], fitted.predict(values[test]))
        head = fitted[-1]
        if hasattr(head, "alpha_"):
            scores["alpha"] = float(head.alpha_)
        scores.update(
            n_train=int(train.sum()),
            n_train_available=available,
            n_test=int(test.sum()),
            n_classes=int(len(set(labels[rows][train]))),
            n_features=int(values.shape[1]),
        )
        if dropped is not None:
            scores["dropped_test_classes"] = dropped
        results[name] = scores
    return results


@renamed_arguments(table="data")
def linear_probe(
    data: TableLike | None = None,
    *,
    label: str,
    train: TableLike | None = None,
    test: TableLike | None = None,
    features: str | Sequence[str] = ("loc",),
    model: Any = None,
    split: str | np.ndarray = "published",
    visible: Sequence[str] | None = None,
    classifier: str = "ridge",
    combine: Sequence[str] = ("fusion", "concat"),
    block_deg: float = 10.0,
    max_train_rows: int | None = MAX_TRAIN_ROWS,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a linear classifier of ``label`` on the train (and val) rows (at most
    ``max_train_rows``, a seeded sample), score it on every test row.

    ``features``: see :func:`feature_sets`. ``split``: ``"published"`` (the table's ``split``
    column), ``"spatial-block"`` (whole ``block_deg`` cells of ``lat``/``lon`` go to one side,
    so nearby points do not leak) or ``"random"``. Or ``train`` and ``test`` instead of ``data``:
    the probe is fitted on the training table and scores every row of the test table whose class
    the training table has (the others are dropped and counted in each result's
    ``dropped_test_classes``). Returns ``{"results": {feature name: scores},
    "accuracy": ...}``, the top-level accuracy being that of the first feature set.
    """
    check_optional_count(max_train_rows, "max_train_rows", minimum=2)
    make_classifier(classifier)  # an unknown classifier is an error before any work
    rows = eval_rows(data, train, test, task="probe", split=split, columns=[label], seed=seed)
    batch = rows.batch
    labels, known = label_values(batch, label)
    prom3e = resolve_model(model)
    sides = rows.sides(seed=seed, block_deg=block_deg)
    sets = feature_sets(batch, features, model=prom3e, visible=visible, combine=combine, seed=seed)
    results = fit_probes(
        sets,
        labels,
        known,
        sides,
        classifier=classifier,
        max_train_rows=max_train_rows,
        seed=seed,
        drop_unseen=rows.two_tables,
    )
    first = next((r for r in results.values() if "accuracy" in r), {})
    return {
        "label": label,
        "split": rows.split_name,
        "classifier": classifier,
        "results": results,
        "accuracy": first.get("accuracy"),
    }


def dropped_text(dropped: Mapping[str, Mapping[str, Any]], shown: int = 10) -> str:
    """The report's sentence on test rows dropped for a class no training row has, from
    ``{where: {"classes": [...], "rows": N}}`` (empty when none was dropped)."""
    parts = []
    for where, entry in dropped.items():
        if entry["rows"]:
            classes = ", ".join(entry["classes"][:shown])
            more = (
                f" and {len(entry['classes']) - shown} more"
                if len(entry["classes"]) > shown
                else ""
            )
            parts.append(
                f"{where}: {entry['rows']} test rows of {len(entry['classes'])} classes never seen "
                f"in training were dropped ({classes}{more})."
            )
    return " ".join(parts)


def _section(results: Mapping[str, Any]) -> Section:
    rows, bars, dropped = [], {}, {}
    for label, result in results.items():
        for feature, scores in result["results"].items():
            scores = dict(scores)
            if "dropped_test_classes" in scores:
                dropped[f"{label}, {feature}"] = scores.pop("dropped_test_classes")
                scores["dropped_test_rows"] = dropped[f"{label}, {feature}"]["rows"]
            rows.append({"label": label, "features": feature, "split": result["split"], **scores})
            if "accuracy" in scores:
                bars.setdefault(feature, {})[label] = 100 * scores["accuracy"]
    figures = [
        bar_chart(bars, title="Linear probe accuracy", ylabel="accuracy (%)", xlabel="label")
    ]
    text = " ".join(["MinMax-scaled features, RidgeClassifierCV.", dropped_text(dropped)])
    return Section("Linear probes", text.strip(), rows, figures)


def parse_feature_sets(text: str) -> list[str | tuple[str, ...]]:
    """``"image;loc,env;prom3e-hidden"`` -> ``[("image",), ("loc", "env"), "prom3e-hidden"]``."""
    return [
        part.strip() if part.strip().startswith("prom3e-") else tuple(parse_list(part))
        for part in text.split(";")
        if part.strip()
    ]


@register_task(
    name="probe",
    description="Linear probes of every label from raw, fused and ProM3E features.",
    options=[
        TaskOption(
            "features",
            None,
            "feature sets, e.g. 'image;loc,env;prom3e-hidden' (default: each modality, their "
            "fusion and, with a model, prom3e-hidden and prom3e-completed)",
            parse_feature_sets,
        ),
        TaskOption("visible", None, "ProM3E features: the visible modalities", parse_list),
    ],
    section=_section,
    order=30,
)
def _run(
    context: EvalContext,
    features: Sequence[str | Sequence[str]] | None,
    visible: Sequence[str] | None,
) -> dict[str, Any]:
    rows, prom3e, seed = context.table_rows, context.model, context.seed
    batch = rows.batch
    non_text = context.non_text
    feature_list = (
        list(features)
        if features
        else (
            [(m,) for m in non_text]
            + ([tuple(non_text)] if len(non_text) > 1 else [])
            + ([HIDDEN, COMPLETED] if prom3e is not None else [])
        )
    )
    sides = rows.sides(seed=seed)
    targets = {label: label_values(batch, label) for label in context.labels}
    metrics = {label: {"split": rows.split_name, "results": {}} for label in context.labels}
    for feature in feature_list:  # one feature set in memory at a time, every label
        matrices = feature_sets(batch, feature, model=prom3e, visible=visible, seed=seed)
        for label, (values, known) in targets.items():
            metrics[label]["results"].update(
                fit_probes(matrices, values, known, sides, seed=seed, drop_unseen=rows.two_tables)
            )
        del matrices
    return metrics
