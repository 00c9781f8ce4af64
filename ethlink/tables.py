"""Run results as tables: per-flow, per-QP and per-port rows as Arrow tables, written to
Parquet beside summary.json (`flows.parquet`, `qps.parquet`, `ports.parquet`).

A column is given as a numpy array (one value per row; a float NaN, or a negative value
in a column named in `nulls`, becomes null; a 2-D array is a list column, a row per row)
or as a Python list of scalars, None, or lists (a list of lists becomes an Arrow list column, e.g. a per-priority counter or a
DCQCN rate series). Rows given as dicts (Result._qps) become columns
whatever keys they carry: a key absent from a row is null there.

NOTE: Arrow arrays are built from numpy buffers (`pa.Array.from_buffers`), never with
`pa.array` or `pa.table(dict)`: pyarrow imports pandas on their first call (about 0.2 s
here, measured with `python -X importtime`), and `ethlink run` should not pay for pandas.
Only `pyarrow` and `pyarrow.parquet` are imported, on first use.

Limits: scalar columns are int64, float64, bool or string (a column of strings is
dictionary-encoded); a list column holds int64 or float64 values, or lists of them.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TABLE_NAMES = ("flows", "qps", "ports")


def _pa():
    import pyarrow as pa
    return pa


def _validity(valid: np.ndarray):
    """Arrow validity bitmap (LSB first) of a bool mask, or None when every row is valid."""
    if valid.all():
        return None
    return _pa().py_buffer(np.packbits(valid, bitorder="little"))


def numpy_array(a: np.ndarray, valid: np.ndarray | None = None):
    """A numpy column (int, float, bool or str) as an Arrow array, without a copy for
    contiguous numbers. `valid`: False where the row is null."""
    pa = _pa()
    a = np.asarray(a)
    if a.dtype.kind == "f":
        valid = ~np.isnan(a) if valid is None else valid & ~np.isnan(a)
    mask = None if valid is None else _validity(np.asarray(valid, dtype=bool))
    if a.dtype.kind == "b":
        data = pa.py_buffer(np.packbits(a, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(a), [mask, data])
    if a.dtype.kind in "US":
        return _dictionary(a.tolist(), mask)
    if a.dtype.kind == "f":
        a = np.ascontiguousarray(a, dtype=np.float64)
        return pa.Array.from_buffers(pa.float64(), len(a), [mask, pa.py_buffer(a)])
    a = np.ascontiguousarray(a, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(a), [mask, pa.py_buffer(a)])


def _strings(values: Sequence[str]):
    pa = _pa()
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def _dictionary(values: list, mask=None):
    """Strings (None for null) as a dictionary<int32, string> array."""
    pa = _pa()
    names = sorted({v for v in values if v is not None})
    code = {n: i for i, n in enumerate(names)}
    idx = np.array([code.get(v, 0) if v is not None else 0 for v in values], dtype=np.int32)
    if mask is None and any(v is None for v in values):
        mask = _validity(np.array([v is not None for v in values]))
    indices = pa.Array.from_buffers(pa.int32(), len(idx), [mask, pa.py_buffer(idx)])
    return pa.DictionaryArray.from_arrays(indices, _strings(names))


def categorical(codes: np.ndarray, names: Sequence[str]):
    """Enum codes (index into `names`) as a dictionary-encoded string column."""
    pa = _pa()
    idx = np.ascontiguousarray(codes, dtype=np.int32)
    return pa.DictionaryArray.from_arrays(pa.Array.from_buffers(pa.int32(), len(idx), [None, pa.py_buffer(idx)]),
                                          _strings(list(names)))


def list_array(values: list):
    """A list of lists (or None) as an Arrow list column, recursively."""
    pa = _pa()
    valid = np.array([v is not None for v in values], dtype=bool)
    lengths = np.array([len(v) if v is not None else 0 for v in values], dtype=np.int32)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = [x for v in values if v is not None for x in v]
    child = column(flat) if flat else numpy_array(np.zeros(0, dtype=np.int64))
    return pa.ListArray.from_buffers(pa.list_(child.type), len(values),
                                     [_validity(valid), pa.py_buffer(offsets)], children=[child])


def fixed_lists(a: np.ndarray):
    """A 2-D numpy array (int or float) as a list column, row i the list a[i]: the same
    Arrow array as list_array of its rows as Python lists, without them."""
    pa = _pa()
    n, width = a.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    child = numpy_array(np.ascontiguousarray(a).reshape(-1))
    return pa.ListArray.from_buffers(pa.list_(child.type), n, [None, pa.py_buffer(offsets)], children=[child])


def column(values):
    """One column from a numpy array or a Python list (see module doc); an Arrow array
    is taken as it is."""
    if hasattr(values, "type") and hasattr(values, "buffers"):
        return values
    if isinstance(values, np.ndarray):
        return fixed_lists(values) if values.ndim == 2 else numpy_array(values)
    values = list(values)
    # NOTE: the column's kind is read from the set of its values' types, not by testing
    # every value (a run's ports table has about 20 000 values in its per-priority
    # lists: four passes of isinstance were 15 ms of the 127:1 incast's write).
    types = set(map(type, values))
    nulls = type(None) in types
    types.discard(type(None))
    valid = np.array([v is not None for v in values], dtype=bool) if nulls else None

    def some(kinds) -> bool:
        return any(issubclass(t, kinds) for t in types)

    if some((list, tuple, np.ndarray)):
        return list_array([None if v is None else list(v) for v in values])
    if some(str):
        return _dictionary(values)
    if types and all(issubclass(t, (bool, np.bool_)) for t in types):
        return numpy_array(np.array([bool(v) if v is not None else False for v in values]), valid)
    if some((float, np.floating)):
        return numpy_array(np.array([float(v) if v is not None else np.nan for v in values]), valid)
    if types <= {int}:
        # Python ints only: numpy converts them as int(v) would, overflow raised alike
        return numpy_array(np.array([0 if v is None else v for v in values] if nulls else values,
                                    dtype=np.int64), valid)
    return numpy_array(np.array([int(v) if v is not None else 0 for v in values], dtype=np.int64), valid)


def table(columns: Mapping[str, Any], nulls: Sequence[str] = ()):
    """An Arrow table from named columns; integer columns named in `nulls` hold a negative
    value where the row has none (the engine's -1), which becomes null."""
    pa = _pa()
    arrays, names = [], []
    for name, values in columns.items():
        if name in nulls and isinstance(values, np.ndarray):
            arrays.append(numpy_array(values, values >= 0))
        else:
            arrays.append(column(values))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def rows_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ()):
    """An Arrow table from row dicts: the columns are `keys` (so an empty table still has
    them), then every other key in the order first seen."""
    order = list(keys)
    for r in rows:
        order.extend(k for k in r if k not in order)
    return table({k: [r.get(k) for r in rows] for k in order})


def write_parquet_atomic(path: Path, tbl) -> None:
    """Write a table to Parquet under a temporary name beside `path`, then rename it
    (ethlink.fileio.replacing): a reader sees the previous file or the whole new one."""
    import pyarrow.parquet as pq

    from .fileio import replacing

    with replacing(path) as tmp:
        pq.write_table(tbl, tmp)


def read_table(outdir: str | os.PathLike[str], name: str):
    """OUTDIR/<name>.parquet as an Arrow table (name: flows, qps or ports)."""
    import pyarrow.parquet as pq

    if name not in TABLE_NAMES:
        raise ValueError(f"table {name!r}: choose one of {', '.join(TABLE_NAMES)}")
    return pq.read_table(Path(outdir) / f"{name}.parquet")
