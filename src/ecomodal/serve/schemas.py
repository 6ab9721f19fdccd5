"""Request bodies of the HTTP API (pydantic): every field checked, NaN and infinities refused."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Most rows one request may carry.
MAX_ROWS = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


class Place(_Strict):
    """A place in degrees."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class EmbedRequest(_Strict):
    """Places to embed with the run's encoders (``modalities``: only those)."""

    rows: list[Place] = Field(min_length=1, max_length=MAX_ROWS)
    modalities: list[str] | None = None


class CompleteRow(_Strict):
    """One row to complete: its embeddings by modality and/or a place (embedded by the run)."""

    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    embeddings: dict[str, list[float]] | None = None

    @model_validator(mode="after")
    def _something_given(self) -> CompleteRow:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if self.lat is None and not self.embeddings:
            raise ValueError("give embeddings and/or lat and lon")
        return self


class CompleteRequest(_Strict):
    """Rows to complete with ProM3E."""

    rows: list[CompleteRow] = Field(min_length=1, max_length=MAX_ROWS)
    visible: list[str] | None = None
    n_samples: int = Field(default=0, ge=0, le=64)
    seed: int = Field(default=0, ge=0)


class SearchRequest(_Strict):
    """One query: a vector, a text, a place or a table id; exactly one of them."""

    vector: list[float] | None = Field(default=None, min_length=1)
    text: str | None = Field(default=None, min_length=1, max_length=1000)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    id: str | None = Field(default=None, min_length=1)
    modality: str | None = None
    k: int = Field(default=10, ge=1, le=1000)
    where: dict[str, str | int | float | list[str | int | float]] | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon")
        given = [
            name
            for name, value in (
                ("vector", self.vector),
                ("text", self.text),
                ("lat/lon", self.lat),
                ("id", self.id),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of vector, text, lat/lon or id; got {given or 'none'}"
            )
        return self


class LayerRequest(_Strict):
    """A new layer: ``text`` (a text query), ``points`` (presence points, optional background)
    or ``similar`` (places like the cell at lat/lon). Photos and CSV files of points come as
    multipart forms (see the endpoint)."""

    kind: Literal["text", "points", "similar"]
    text: str | None = Field(default=None, min_length=1, max_length=1000)
    points: list[Place] | None = Field(default=None, min_length=1, max_length=MAX_ROWS)
    background: list[Place] | None = Field(default=None, min_length=1, max_length=MAX_ROWS)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    n_background: int = Field(default=10_000, ge=10, le=1_000_000)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> LayerRequest:
        needs = {"text": ("text",), "points": ("points",), "similar": ("lat", "lon")}[self.kind]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} layer needs {', '.join(missing)}")
        return self
