"""Turn caller columns into a record batch of the table's exact schema, or refuse with a clear StoreError.

Decimals accept exact decimal strings, decimal.Decimal and int, never float, and never anything that would
lose digits or overflow DECIMAL(38,18). Timestamps accept int ns or Arrow timestamps. Nothing is coerced
across kinds (no strings into ints, no floats into ints).
"""
from __future__ import annotations

import decimal
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import Table

from .writer import StoreError

# pyarrow wraps instead of failing for some string->decimal casts ("9e37", 23+ integer digits); no legit
# DECIMAL(38,18) value is >= 1e20, so a column holding such text whose float value is beyond this bound
# is refused. Only columns with an exponent or a run of 21+ digits pay for the float check.
_DEC_LIMIT = 1.5e20
_WRAP_RISK = "[eE]|[0-9]{21}"


def _kind_ok(src: pa.DataType, dst: pa.DataType) -> bool:
    t = pa.types
    if t.is_null(src) or src == dst:
        return True
    if t.is_decimal(dst):
        return t.is_string(src) or t.is_large_string(src) or t.is_decimal(src) or t.is_integer(src)
    if t.is_timestamp(dst):
        return t.is_timestamp(src) or t.is_integer(src)
    if t.is_integer(dst):
        return t.is_integer(src)
    if t.is_string(dst):
        return t.is_string(src) or t.is_large_string(src)
    if t.is_binary(dst):
        return t.is_binary(src) or t.is_large_binary(src) or t.is_string(src)
    return False


def _dec_text(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, decimal.Decimal):
        if not v.is_finite():
            raise TypeError(f"non-finite decimal {v}")
        return format(v, "f")
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise TypeError(f"{type(v).__name__} {v!r} (pass an exact decimal string, Decimal or int; never float)")


def _to_array(values, field: pa.Field) -> pa.Array:
    """Build or cast one column; raises TypeError/ValueError/pa.ArrowException on bad input."""
    dst = field.type
    if isinstance(values, np.ndarray):
        values = pa.array(values)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if not _kind_ok(values.type, dst):
            raise TypeError(f"Arrow type {values.type} cannot hold {dst}")
        src = values
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"expected a sequence of values, got {type(values).__name__}")
    elif pa.types.is_decimal(dst):
        try:
            src = pa.array(values, pa.string())  # the common case: exact decimal strings already
        except pa.ArrowTypeError:
            src = pa.array([_dec_text(v) for v in values], pa.string())
    elif pa.types.is_binary(dst):
        src = pa.array(values, pa.binary())  # takes bytes-likes and str only, as _kind_ok would (and 8x faster)
    else:
        src = pa.array(values)  # inferred, so the kind check below sees what the caller really passed
        if not _kind_ok(src.type, dst):
            raise TypeError(f"values of type {src.type} cannot hold {dst}")
    arr = src if src.type == dst else src.cast(dst, safe=True)
    if pa.types.is_decimal(dst) and src.type != dst and not pa.types.is_integer(src.type) \
            and (pa.types.is_decimal(src.type) or pc.any(pc.match_substring_regex(src, _WRAP_RISK)).as_py()):
        limit = pc.max(pc.abs(src.cast(pa.float64()))).as_py()
        if limit is not None and limit >= _DEC_LIMIT:
            raise ValueError(f"value beyond DECIMAL(38,18) range (|x| ~ {limit:.3g})")
    return arr


def to_batch(table: Table, columns: Mapping) -> pa.RecordBatch:
    """Validate `columns` against `table` and build the batch (exact schema, field metadata included)."""
    if not isinstance(columns, Mapping):
        raise StoreError(f"{table.name}: columns must be a mapping of column name to values")
    names = table.columns
    missing = [c for c in names if c not in columns]
    unknown = [c for c in columns if c not in names]
    if missing or unknown:
        raise StoreError(f"{table.name}: missing columns {missing}, unknown columns {unknown}"
                         f"; the table's columns are {names}")
    arrays, length = [], None
    for field in table.schema:
        values = columns[field.name]
        try:
            arr = _to_array(values, field)
        except (TypeError, ValueError, OverflowError, pa.ArrowException, decimal.DecimalException) as e:
            raise StoreError(f"{table.name}.{field.name} ({field.type}): bad value: {e}") from None
        if length is None:
            length = len(arr)
        elif len(arr) != length:
            raise StoreError(f"{table.name}.{field.name}: {len(arr)} values, other columns have {length}")
        if not field.nullable and arr.null_count:
            first = arr.is_null().to_pylist().index(True)
            raise StoreError(f"{table.name}.{field.name}: null at row {first} but the column is not nullable")
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=table.schema)
