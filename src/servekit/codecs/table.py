"""One table sent as named columns (MLServer's ``pd`` content type): which requests are tables,
and their columns, checked. Pure: tensors and parameters in, arrays out; no pandas here.

A table request sends one input per column: the input's name is the column's name, its datatype
the column's (BYTES for strings), its data the column's values. Guarantees of ``table_columns``:

- every column comes back one-dimensional, in the request's order, under its own name;
- every column has the same number of rows, at least one;
- a column is a vector: shape ``[N]``, ``[N, 1]`` or ``[1, N]`` (MLServer reads each input's data
  flat whatever its shape; a ``[3, 2]`` input would be six rows there, refused here);
- two columns never share a name.

Anything else is InvalidInput naming the column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from servekit.errors import InvalidInput
from servekit.types import Arrays, Tensor

__all__ = ["TABLE_CONTENT_TYPE", "TENSOR_CONTENT_TYPE", "is_table", "table_columns"]

TABLE_CONTENT_TYPE: Final = "pd"
TENSOR_CONTENT_TYPE: Final = "np"


def is_table(mode: str, parameters: Mapping[str, Any]) -> bool:
    """Whether a request with these parameters sends a table to a model whose ``table_input`` is ``mode``:
    ``never``: no; ``on_request``: when ``content_type`` is ``pd``; ``always``: unless it is ``np``."""
    asked = parameters.get("content_type")
    if mode == "on_request":
        return asked == TABLE_CONTENT_TYPE
    if mode == "always":
        return asked != TENSOR_CONTENT_TYPE
    return False


def table_columns(tensors: Sequence[Tensor]) -> Arrays:
    """The request's inputs as the columns of one table (see the module docstring)."""
    if not tensors:
        raise InvalidInput("a table (content_type pd) needs at least one input, one per column")
    columns: Arrays = {}
    first: tuple[str, int] | None = None
    for tensor in tensors:
        name = tensor.name
        if name in columns:
            raise InvalidInput(f"column {name!r} is sent twice; a table's columns need different names")
        if sum(1 for size in tensor.shape if size != 1) > 1 or len(tensor.shape) > 2:
            raise InvalidInput(f"column {name!r} has shape {list(tensor.shape)}; a column is one value per row: "
                               "shape [N] or [N, 1]")
        column = tensor.data.reshape(-1)
        if first is None:
            first = (name, column.size)
        elif column.size != first[1]:
            raise InvalidInput(f"column {name!r} has {column.size} rows; column {first[0]!r} has {first[1]}")
        columns[name] = column
    if first is not None and first[1] == 0:
        raise InvalidInput("the table has no rows")
    return columns
