"""The one encoder interface: ``encoder.encode(inputs, batch_size=..., device=..., show_progress=...)``.

An :class:`Encoder` pairs a plain ``nn.Module`` with the preprocessing it was trained with. Inputs are
columns of equal length (``lat=``/``lon=`` for places, paths for media, strings for text); rows that
cannot be encoded (a corrupt photo, an invalid coordinate) either raise, naming the row, or, with
``on_error="null"``, come back as NaN rows with a :class:`RowError` each.
"""

from __future__ import annotations

import abc
import copy
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ecomodal.devices import resolve_device
from ecomodal.errors import (
    EcomodalError,
    InputTypeError,
    InvalidArgumentError,
    InvalidInputError,
    MissingColumnError,
)
from ecomodal.precision import check_precision, precision_context
from ecomodal.progress import progress_bar


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is: its id, modality, output dimension, licence and where it came from."""

    id: str
    modality: str
    dim: int
    licence: str
    source: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RowError:
    """One row that could not be encoded: its position, the input column and the reason."""

    row: int
    column: str
    reason: str


@dataclass
class EncodeResult:
    """Embeddings [N, D] float32 (NaN where a row failed), ``valid`` [N] and the row errors."""

    embeddings: np.ndarray
    valid: np.ndarray
    errors: list[RowError]


@dataclass
class Prepared:
    """A preprocessed batch: model inputs for the rows in ``rows`` (offsets into the batch)."""

    inputs: Any
    rows: np.ndarray
    errors: list[tuple[int, str, str]]  # (offset in batch, column, reason)


class Encoder(abc.ABC):
    """Base class of every modality encoder.

    Subclasses set ``input_columns`` (names of the columns ``encode`` takes), implement
    :meth:`prepare` (validate and preprocess one batch of rows) and :meth:`forward`.
    """

    input_columns: tuple[str, ...] = ()
    default_batch_size: int = 256
    #: False where bfloat16 falls below cosine 0.999 to float32: ``bf16`` then runs float32.
    supports_bf16: bool = True

    def __init__(
        self,
        model: nn.Module,
        info: EncoderInfo,
        *,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> None:
        self.model = model.eval()
        self.info = info
        self.precision = check_precision(precision)
        self.device = resolve_device(device) if device is not None else torch.device("cpu")
        self.model.to(self.device)
        self._half: tuple[Any, nn.Module] | None = None

    # ------------------------------------------------------------------ descriptors
    @property
    def id(self) -> str:
        return self.info.id

    @property
    def modality(self) -> str:
        return self.info.modality

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def licence(self) -> str:
        return self.info.licence

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id!r}, modality={self.modality!r}, dim={self.dim}, "
            f"licence={self.licence!r}, precision={self.precision!r})"
        )

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def prepare(self, columns: Mapping[str, np.ndarray]) -> Prepared:
        """Validate and preprocess one batch of rows (every column the same length)."""

    @abc.abstractmethod
    def forward(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """Run ``model`` (``self.model`` or its bfloat16 copy) on prepared inputs; returns
        [n, dim] (not yet normalised)."""

    def model_for(self, precision: str) -> nn.Module:
        """The module that runs at ``precision``: ``self.model``, or for ``bf16`` a cached
        bfloat16 copy (weights cast once, not by autocast on every batch; submodules marked
        ``keep_float32 = True`` stay float32). The copy is remade when the weights change."""
        if precision == "fp32":
            return self.model
        params = list(self.model.parameters())
        key = (self.device, tuple((p.data_ptr(), p._version) for p in params))
        if self._half is None or self._half[0] != key:
            half = copy.deepcopy(self.model).to(self.device, torch.bfloat16).eval()
            for original, copied in zip(self.model.modules(), half.modules(), strict=True):
                if getattr(original, "keep_float32", False):
                    copied.float().load_state_dict(original.state_dict())
            self._half = (key, half)
        return self._half[1]

    def input_dtype(self, model: nn.Module) -> torch.dtype:
        """The dtype of floating inputs for ``model`` (bfloat16 for the reduced-precision copy)."""
        return torch.float32 if model is self.model else torch.bfloat16

    # ------------------------------------------------------------------ public API
    def encode(
        self,
        inputs: Any = None,
        *,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        show_progress: bool = False,
        normalize: bool = True,
        precision: str | None = None,
        on_error: str = "raise",
        **columns: Any,
    ) -> np.ndarray:
        """Encode rows to a float32 array [N, dim] (L2-normalised unless ``normalize=False``).

        ``inputs`` is a table with this encoder's input columns (a mapping, pandas DataFrame or
        pyarrow Table), or a plain sequence for single-column encoders; columns can also be given
        as keywords (``lat=..., lon=...``). ``on_error="raise"`` raises on the first bad row,
        naming it; ``"null"`` gives NaN rows instead (see :meth:`encode_rows` for the reasons).
        """
        if on_error not in ("raise", "null"):
            raise InvalidArgumentError(f"on_error must be 'raise' or 'null', got {on_error!r}.")
        result = self.encode_rows(
            inputs,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
            normalize=normalize,
            precision=precision,
            **columns,
        )
        if on_error == "raise" and result.errors:
            first = result.errors[0]
            more = f" ({len(result.errors) - 1} more rows failed)" if len(result.errors) > 1 else ""
            raise InvalidInputError(
                f"{self.id}: row {first.row}, column {first.column!r}: {first.reason}{more}. "
                "Pass on_error='null' to get NaN rows instead."
            )
        return result.embeddings

    def encode_rows(
        self,
        inputs: Any = None,
        *,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        show_progress: bool = False,
        normalize: bool = True,
        precision: str | None = None,
        **columns: Any,
    ) -> EncodeResult:
        """Like :meth:`encode`, but never raises for bad rows: they are NaN, ``valid`` False and
        listed in ``errors`` with the reason."""
        table = self._columns(inputs, columns)
        n_rows = len(next(iter(table.values()))) if table else 0
        batch_size = int(batch_size or self.default_batch_size)
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size}.")
        if device is not None and resolve_device(device) != self.device:
            self.device = resolve_device(device)
            self.model.to(self.device)
        precision = check_precision(precision or self.precision)
        if precision == "bf16" and not self.supports_bf16:
            warnings.warn(
                f"{self.id} loses accuracy in bfloat16; it runs in float32.", stacklevel=2
            )
            precision = "fp32"
        out = np.full((n_rows, self.dim), np.nan, dtype=np.float32)
        valid = np.zeros(n_rows, dtype=bool)
        errors: list[RowError] = []
        model = self.model_for(precision)
        with (
            progress_bar(f"{self.modality} ({self.id})", n_rows, enabled=show_progress) as advance,
            precision_context(precision, self.device),
        ):
            for start in range(0, n_rows, batch_size):
                stop = min(start + batch_size, n_rows)
                batch = {name: values[start:stop] for name, values in table.items()}
                prepared = self.prepare(batch)
                errors.extend(
                    RowError(start + offset, column, reason)
                    for offset, column, reason in prepared.errors
                )
                if len(prepared.rows):
                    emb = self.forward(model, prepared.inputs).float()
                    if normalize:
                        emb = torch.nn.functional.normalize(emb, dim=-1)
                    rows = start + np.asarray(prepared.rows)
                    out[rows] = emb.cpu().numpy()
                    valid[rows] = True
                advance(stop - start)
        return EncodeResult(out, valid, errors)

    # ------------------------------------------------------------------ helpers
    def _columns(self, inputs: Any, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        names = self.input_columns
        given: dict[str, Any] = {}
        if inputs is not None:
            if _is_table(inputs):
                missing = [name for name in names if name not in _table_names(inputs)]
                if missing:
                    raise MissingColumnError(
                        f"{self.id} needs input columns {list(names)}; the table lacks {missing}."
                    )
                given = {name: _table_column(inputs, name) for name in names}
            elif len(names) == 1:
                given = {names[0]: inputs}
            else:
                raise InputTypeError(
                    f"{self.id} takes keyword columns {', '.join(f'{n}=' for n in names)} or a table "
                    f"with those columns, not a {type(inputs).__name__}."
                )
        for name, values in columns.items():
            if name not in names:
                raise InputTypeError(
                    f"{self.id} got an unexpected input {name!r}; it takes {', '.join(names)}."
                )
            given[name] = values
        missing = [name for name in names if name not in given]
        if missing:
            raise InputTypeError(f"{self.id} needs inputs {', '.join(f'{n}=' for n in missing)}.")
        arrays = {name: _as_array(values, name) for name, values in given.items()}
        lengths = {name: len(values) for name, values in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidArgumentError(f"{self.id}: input columns differ in length: {lengths}.")
        return arrays


def prepare_rows(
    fn: Any, values: np.ndarray, column: str, *, workers: int | None = None
) -> tuple[list[Any], np.ndarray, list[tuple[int, str, str]]]:
    """Apply ``fn`` (decode + preprocess one row) to each value on a thread pool.

    Returns (outputs of the rows that worked, their offsets, [(offset, column, reason)]) where a
    row fails when ``fn`` raises an EcomodalError or ValueError; its message is the reason.
    """
    from concurrent.futures import ThreadPoolExecutor

    def run(value: Any) -> tuple[bool, Any]:
        try:
            return True, fn(value)
        except (EcomodalError, ValueError) as err:
            return False, str(err)

    workers = workers or max(1, min(8, torch.get_num_threads()))
    if len(values) > 1 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run, values))
    else:
        results = [run(value) for value in values]
    outputs, rows, errors = [], [], []
    for offset, (ok, result) in enumerate(results):
        if ok:
            outputs.append(result)
            rows.append(offset)
        else:
            errors.append((offset, column, result))
    return outputs, np.asarray(rows, dtype=np.int64), errors


def _is_table(inputs: Any) -> bool:
    return (
        isinstance(inputs, Mapping) or hasattr(inputs, "column_names") or hasattr(inputs, "columns")
    )


def _table_names(inputs: Any) -> list[str]:
    if isinstance(inputs, Mapping):
        return list(inputs)
    if hasattr(inputs, "column_names"):
        return list(inputs.column_names)
    return list(inputs.columns)


def _table_column(inputs: Any, name: str) -> Any:
    column = inputs[name]
    if hasattr(column, "to_numpy") and hasattr(column, "combine_chunks"):  # pyarrow
        return column.to_numpy(zero_copy_only=False)
    return column


def _as_array(values: Any, name: str) -> np.ndarray:
    """One input column as a 1-D numpy array (numbers as float64, anything else as objects).

    ``None`` or a non-iterable object is an :class:`InputTypeError`, an array of more than one
    dimension an :class:`InvalidInputError`, each naming the column and what it got."""
    if values is None:
        raise InputTypeError(
            f"{name}= got None; expected one value per row (a list, array or table column)."
        )
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        return _one_dimensional(values, name)
    if hasattr(values, "to_numpy"):  # pandas Series, pyarrow arrays
        return _one_dimensional(np.asarray(values.to_numpy()), name)
    if isinstance(values, str | bytes | os.PathLike) or np.isscalar(values):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise InputTypeError(
            f"{name}= got a value of type {type(values).__name__}; expected one value per row "
            "(a list, array or table column)."
        ) from None
    if values and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values
    ):
        return np.asarray(values, dtype=np.float64)
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _one_dimensional(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 0:
        return array.reshape(1)
    if array.ndim != 1:
        raise InvalidInputError(
            f"{name}= must be one value per row (shape (N,)); got an array of shape "
            f"{tuple(array.shape)}."
        )
    return array


class PixelEncoder(Encoder):
    """An encoder of pictures (photos, satellite tiles): each row of its one input column is
    decoded and preprocessed by ``self.preprocess`` into a [3, H, W] array."""

    default_batch_size = 32

    def __init__(self, model: nn.Module, info: EncoderInfo, preprocess: Any, **kw: Any):
        super().__init__(model, info, **kw)
        self.preprocess = preprocess

    def prepare(self, columns: Mapping[str, np.ndarray]) -> Prepared:
        column = self.input_columns[0]
        arrays, rows, errors = prepare_rows(self.preprocess, columns[column], column)
        pixels = torch.from_numpy(np.stack(arrays)) if arrays else None
        return Prepared(pixels, rows, errors)

    def forward(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        return model(inputs.to(self.device, self.input_dtype(model)))


class StringEncoder(Encoder):
    """An encoder of text: empty or missing strings are row errors; :meth:`tokenize` turns the
    others into model inputs (a tensor or a tuple of tensors)."""

    input_columns = ("text",)
    default_batch_size = 256

    def __init__(self, model: nn.Module, info: EncoderInfo, tokenizer: Any, **kw: Any):
        super().__init__(model, info, **kw)
        self.tokenizer = tokenizer

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> Any:
        """Model inputs for a non-empty list of strings."""

    def prepare(self, columns: Mapping[str, np.ndarray]) -> Prepared:
        column = self.input_columns[0]
        texts, rows, errors = [], [], []
        for offset, value in enumerate(columns[column]):
            if not isinstance(value, str) or not value.strip():
                errors.append((offset, column, f"no text to encode (got {value!r})"))
                continue
            texts.append(value.strip())
            rows.append(offset)
        tokens = self.tokenize(texts) if texts else None
        return Prepared(tokens, np.asarray(rows, dtype=np.int64), errors)

    def forward(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        if isinstance(inputs, tuple):
            return model(*(tensor.to(self.device) for tensor in inputs))
        return model(inputs.to(self.device))
