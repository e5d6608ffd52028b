"""Labelled transactions as a frame: reading the user's own data, checking it, turning it into the
scorer's wire format, and computing the scorer's features from it.

A labelled frame has the transaction contract's columns (:data:`REQUIRED`, optionally ``lat``
and ``lon``) plus an integer ``label`` (1 = fraud), and optionally ``labelled_at`` (when the
verdict became known; without it, at the transaction's time). Every other column becomes one of
the transaction's ``attributes`` (a number, text or a boolean; empty cells are left out), as a
producer would send it. Sources: CSV, Parquet, or a PostgreSQL table or query.

Every row goes through the scorer's own decoder, so data the scorer would dead-letter is refused
here with the row number and the reason. Features come from replaying the rows through the
scorer's own engines (and the entity stage's aggregator, point-in-time): serving and training
cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
from fraud_scorer import feature_sets
from fraud_scorer.contract import Transaction, TransactionDecoder
from fraud_scorer.entity_features import LabelEvent, point_in_time_rows
from fraud_scorer.feature_defs import FeatureSetDef

REQUIRED: Final = (
    "transaction_id",
    "user_id",
    "amount",
    "currency",
    "timestamp",
    "merchant",
    "merchant_category",
    "channel",
    "location",
    "device_id",
)
OPTIONAL: Final = ("lat", "lon")
LABELLED_AT: Final = "labelled_at"
_ATTRIBUTE_NAME: Final = r"^[A-Za-z0-9_.-]{1,64}$"
_TEXT: Final = tuple(c for c in REQUIRED if c not in ("amount", "timestamp"))
_MAX_MESSAGE_BYTES: Final = 1 << 20


class DataError(ValueError):
    """The data cannot be used for training; the message says which rows or columns and why."""


def _rows(index: pd.Index | npt.NDArray[np.intp], limit: int = 5) -> str:
    shown = ", ".join(str(int(i) + 2) for i in list(index)[:limit])  # header is line 1
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"{shown}{more}"


def read_table(source: str, *, query: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file, or (``source`` a ``postgresql://`` URL) a table or query."""
    if source.startswith(("postgresql://", "postgres://")):
        if not query:
            raise DataError("reading from PostgreSQL needs a table name or a SELECT query")
        return _read_postgres(source, query)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{source}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # Text as text: ids like 00123 must not become numbers, and bad numbers are reported
        # by row below instead of failing the whole read.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise DataError(f"{source}: unsupported file type {suffix!r} (use .csv or .parquet)")


def _read_postgres(url: str, query: str) -> pd.DataFrame:
    import psycopg
    from psycopg import sql

    statement: sql.Composable
    if query.lstrip().lower().startswith(("select", "with")):
        statement = sql.SQL(query)  # type: ignore[arg-type]
    else:  # a table name, possibly schema-qualified
        statement = sql.SQL("SELECT * FROM {}").format(sql.Identifier(*query.split(".")))
    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
            cur.execute(statement)
            names = [d.name for d in cur.description or ()]
            return pd.DataFrame(cur.fetchall(), columns=names)
    except psycopg.Error as exc:
        raise DataError(f"PostgreSQL: {exc}".strip()) from exc


def validate(frame: pd.DataFrame, *, label_column: str = "label") -> pd.DataFrame:
    """Check ``frame`` and return it normalised: contract columns, ``label`` as int8, sorted by
    time. Raises :class:`DataError` naming missing columns or the first bad rows."""
    missing = [c for c in (*REQUIRED, label_column) if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise DataError(f"missing column(s) {', '.join(missing)}; the data has {found}")
    out = pd.DataFrame(index=frame.index)
    for col in _TEXT:
        values = frame[col]
        bad = values.isna()
        if bad.any():
            raise DataError(f"column {col!r} is empty in row(s) {_rows(frame.index[bad])}")
        out[col] = values.astype(str)
    for col in ("amount", *[c for c in OPTIONAL if c in frame.columns]):
        numbers = pd.to_numeric(frame[col], errors="coerce")
        bad = numbers.isna() & (frame[col].notna() if col != "amount" else True)
        if bad.any():
            raise DataError(f"column {col!r} is not a number in row(s) {_rows(frame.index[bad])}")
        out[col] = numbers.astype(float)
    out["timestamp"] = _timestamps(frame["timestamp"])
    out["label"] = _labels(frame[label_column], label_column)
    if LABELLED_AT in frame.columns:
        out[LABELLED_AT] = _timestamps(frame[LABELLED_AT].fillna(frame["timestamp"]))
    for col in frame.columns:
        if col in (*REQUIRED, *OPTIONAL, label_column, LABELLED_AT):
            continue
        name = str(col)
        if not pd.Series([name]).str.match(_ATTRIBUTE_NAME).all():
            raise DataError(
                f"column {name!r} would be an attribute, but attribute names are 1-64 of "
                "A-Z a-z 0-9 _ . -"
            )
        out[f"attributes.{name}"] = _attribute_values(frame[col])
    _check_with_scorer_decoder(out)
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _attribute_values(values: pd.Series) -> pd.Series:
    """An extra column as attribute values: numbers, booleans or text (None: left out)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype(object)
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.astype(float)
        return numbers.astype(object).where(np.isfinite(numbers), None)
    return (
        values.astype(object)
        .where(values.notna(), None)
        .map(lambda v: v if v is None or isinstance(v, bool | int | float) else str(v))
    )


def _timestamps(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        raise DataError(
            "column 'timestamp' has no time zone; store it as timestamptz / a zoned timestamp "
            "or write RFC 3339 strings with an offset"
        )
    text = values.astype(str)
    zoned = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False)
    if not zoned.all():
        raise DataError(
            f"timestamp without a time zone offset in row(s) {_rows(values.index[~zoned])} "
            "(the scorer refuses those too: write e.g. 2026-11-02T09:30:00Z)"
        )
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna()
    if bad.any():
        raise DataError(f"timestamp is not RFC 3339 in row(s) {_rows(values.index[bad])}")
    return parsed


def _labels(values: pd.Series, name: str) -> pd.Series:
    if values.isna().any():
        raise DataError(
            f"label column {name!r} is empty in row(s) {_rows(values.index[values.isna()])}"
        )
    text = values.astype(str).str.strip().str.lower()
    mapped = text.map({"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1})
    bad = mapped.isna()
    if bad.any():
        seen = sorted(set(values[bad].astype(str)))[:5]
        raise DataError(
            f"label column {name!r} must be 0/1 (or false/true); found {seen} in row(s) "
            f"{_rows(values.index[bad])}"
        )
    labels = mapped.astype(np.int8)
    if labels.nunique() < 2:
        raise DataError(
            f"label column {name!r} holds only {int(labels.iloc[0])}s: need both classes"
        )
    return labels


def _check_with_scorer_decoder(frame: pd.DataFrame) -> None:
    decoder = TransactionDecoder(_MAX_MESSAGE_BYTES)
    for pos, raw in enumerate(to_payloads(frame)):
        result = decoder.decode(raw)
        if not isinstance(result, Transaction):
            raise DataError(
                f"row {pos + 2} is not a valid transaction ({result.reason}: {result.detail}); "
                "the scorer would dead-letter it"
            )


class _Wire(msgspec.Struct, omit_defaults=True, gc=False):
    """The transaction as producers send it (the fields of the scorer's contract)."""

    transaction_id: str
    user_id: str
    amount: float
    currency: str
    timestamp: str
    merchant: str
    merchant_category: str
    channel: str
    location: str
    device_id: str
    lat: float | None = None
    lon: float | None = None
    attributes: dict[str, str | float | bool] = {}


def to_payloads(frame: pd.DataFrame) -> list[bytes]:
    """Each row as the JSON message a producer sends to the scorer (RFC 3339 UTC timestamps)."""
    utc = frame["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
    stamps = np.datetime_as_string(utc.to_numpy("datetime64[us]"), unit="us")
    columns = [
        np.char.add(stamps, "Z").tolist() if c == "timestamp" else frame[c].astype(object).tolist()
        for c in REQUIRED
    ]
    place = "lat" in frame.columns and "lon" in frame.columns
    if place:
        for c in OPTIONAL:  # NaN (no place) becomes an omitted field
            values = frame[c].astype(float)
            columns.append(values.astype(object).where(values.notna(), None).tolist())
    attributes = [c for c in frame.columns if str(c).startswith("attributes.")]
    if attributes:
        if not place:
            columns += [[None] * len(frame)] * 2
        names = [str(c).removeprefix("attributes.") for c in attributes]
        cells = zip(*(frame[c].tolist() for c in attributes), strict=True)
        columns.append(
            [{k: v for k, v in zip(names, row, strict=True) if v is not None} for row in cells]
        )
    encode = msgspec.json.Encoder().encode
    return [encode(_Wire(*row)) for row in zip(*columns, strict=True)]


@dataclass
class Dataset:
    """Scorer features of a time-ordered stream, with what evaluation needs beside them."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int8]
    ts: npt.NDArray[np.float64]  # epoch seconds
    card: npt.NDArray[np.object_]  # the card / user each row belongs to
    feature_names: tuple[str, ...] = feature_sets.V1.names
    feature_set: str = feature_sets.V1.version
    # The declared set the rows were computed with (None: the shipped v1 engine), for the
    # model's manifest.
    definitions: FeatureSetDef | None = None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask: npt.NDArray[np.bool_]) -> Dataset:
        return Dataset(
            self.x[mask],
            self.y[mask],
            self.ts[mask],
            self.card[mask],
            self.feature_names,
            self.feature_set,
            self.definitions,
        )


def scorer_features(
    frame: pd.DataFrame,
    *,
    definitions: FeatureSetDef | None = None,
    history_hours: float = 168.0,
    max_events_per_user: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Replay ``frame`` (time-ordered) as wire messages through the scorer's decoder and
    feature engine (of ``definitions``, else the shipped v1 set); ``progress`` is called with
    the rows done every 10,000 rows."""
    payloads = to_payloads(frame)
    labelled_at = None
    if LABELLED_AT in frame.columns:
        labelled_at = frame[LABELLED_AT].map(lambda t: t.timestamp()).to_numpy(float)
    return features_from_payloads(
        payloads,
        frame["label"].to_numpy(np.int8),
        labelled_at=labelled_at,
        definitions=definitions,
        history_hours=history_hours,
        max_events_per_user=max_events_per_user,
        progress=progress,
    )


def features_from_payloads(
    payloads: Sequence[bytes],
    labels: npt.NDArray[np.int8],
    *,
    labelled_at: npt.NDArray[np.float64] | None = None,
    definitions: FeatureSetDef | None = None,
    history_hours: float = 168.0,
    max_events_per_user: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Features of time-ordered wire messages (:func:`replay_features`), as float32 for the
    models."""
    features = feature_sets.from_settings(definitions, history_hours, max_events_per_user)
    replayed = replay_features(
        payloads, labels, features, labelled_at=labelled_at, progress=progress
    )
    x = np.empty((len(payloads), len(features.names)), dtype=np.float32)
    for i, row in enumerate(replayed.rows):
        x[i] = row
    return Dataset(
        x,
        np.asarray(labels, np.int8),
        replayed.ts,
        np.array([tx.user_id for tx in replayed.transactions], dtype=object),
        features.names,
        features.version,
        definitions,
    )


@dataclass
class Replayed:
    """Wire messages decoded, and each one's features as a scorer computes them (float64, the
    set's order: the values its rules read)."""

    transactions: list[Transaction]
    ts: npt.NDArray[np.float64]  # epoch seconds
    rows: Iterator[list[float]]  # one per transaction, in order, computed as they are read


def replay_features(
    payloads: Sequence[bytes],
    labels: npt.NDArray[np.int8],
    features: feature_sets.FeatureSet,
    *,
    labelled_at: npt.NDArray[np.float64] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Replayed:
    """Features of time-ordered wire messages. Staged features (other entities, labels) are
    replayed point-in-time through the entity stage's own aggregator: each row sees the
    transactions before it and the verdicts known by then (``labelled_at``, else the
    transaction's time; a feature's ``delay`` keeps recent ones out). The rows are yielded as
    the caller reads them: training keeps them as a float32 matrix, a backtest as the lists
    the rules read."""
    decoder = TransactionDecoder(_MAX_MESSAGE_BYTES)
    ts = np.empty(len(payloads))
    decoded: list[tuple[Transaction, float]] = []
    for i, raw in enumerate(payloads):
        tx = decoder.decode(raw)
        if not isinstance(tx, Transaction):
            raise DataError(f"row {i + 2} is not a valid transaction: {tx.reason}: {tx.detail}")
        t = tx.timestamp.timestamp()
        decoded.append((tx, t))
        ts[i] = t
    rows: Iterator[list[float]]
    if features.staged is not None:
        known = ts if labelled_at is None else np.maximum(labelled_at, ts)
        verdicts = (
            LabelEvent(int(i), bool(labels[i]), float(known[i])) for i in range(len(labels))
        )
        rows = iter(
            point_in_time_rows(features.staged, decoded, verdicts, features.make_engine, progress)
        )
    else:
        rows = _own_rows(features.make_engine(), decoded, progress)
    return Replayed([tx for tx, _ in decoded], ts, rows)


def _own_rows(
    engine: feature_sets.Engine,
    decoded: Sequence[tuple[Transaction, float]],
    progress: Callable[[int], None] | None,
) -> Iterator[list[float]]:
    compute = engine.compute
    for i, (tx, t) in enumerate(decoded):
        yield compute(0, tx, t)
        if progress is not None and i % 10_000 == 9_999:
            progress(i + 1)
