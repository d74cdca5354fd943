"""servekit.codecs.table: which requests are tables, and their columns checked (pure, no server)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from servekit.codecs.table import is_table, table_columns
from servekit.errors import InvalidInput
from servekit.types import Tensor


def _column(name: str, values: list[Any], shape: tuple[int, ...] | None = None) -> Tensor:
    if values and isinstance(values[0], str):
        data = np.array([value.encode() for value in values], dtype=object)
        datatype = "BYTES"
    else:
        data, datatype = np.array(values, dtype=np.float64), "FP64"
    shape = shape if shape is not None else (len(values), 1)
    return Tensor(name, datatype, shape, data.reshape(shape))


@pytest.mark.parametrize(("mode", "parameters", "table"), [
    ("never", {"content_type": "pd"}, False),
    ("on_request", {"content_type": "pd"}, True),
    ("on_request", {}, False),
    ("on_request", {"content_type": "np"}, False),
    ("always", {}, True),
    ("always", {"content_type": "pd"}, True),
    ("always", {"content_type": "np"}, False),
])
def test_a_request_is_a_table_as_the_models_mode_and_its_content_type_say(mode: str, parameters: dict[str, Any],
                                                                           table: bool) -> None:
    assert is_table(mode, parameters) is table


@pytest.mark.parametrize("shape", [(3,), (3, 1), (1, 3)])
def test_each_column_comes_back_flat_in_the_requests_order_under_its_own_name(shape: tuple[int, ...]) -> None:
    columns = table_columns([_column("color", ["red", "blue", "green"], shape), _column("age", [25.0, 50.0, 60.0],
                                                                                        shape)])
    assert list(columns) == ["color", "age"]
    assert columns["color"].tolist() == [b"red", b"blue", b"green"]
    assert columns["age"].shape == (3,) and columns["age"].dtype == np.float64


@pytest.mark.parametrize(("tensors", "said"), [
    ([], r"a table \(content_type pd\) needs at least one input, one per column"),
    ([_column("age", [1.0, 2.0]), _column("age", [3.0, 4.0])], r"column 'age' is sent twice"),
    ([_column("age", [1.0, 2.0, 3.0]), _column("color", ["red", "blue"])],
     r"column 'color' has 2 rows; column 'age' has 3"),
    ([_column("age", [1.0, 2.0, 3.0, 4.0], (2, 2))], r"column 'age' has shape \[2, 2\]; a column is one value per row"),
    ([_column("age", [1.0, 2.0], (2, 1, 1))], r"column 'age' has shape \[2, 1, 1\]"),
    ([_column("age", [], (0, 1))], r"the table has no rows"),
])
def test_what_is_not_one_table_is_refused_naming_the_column(tensors: list[Tensor], said: str) -> None:
    with pytest.raises(InvalidInput, match=said):
        table_columns(tensors)
