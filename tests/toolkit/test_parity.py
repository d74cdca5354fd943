"""The parity report: errors, tolerance, exact outputs, shapes."""

from __future__ import annotations

import numpy as np

from servekit.toolkit.parity import ParityReport


def test_float_outputs_within_and_past_tolerance() -> None:
    report = ParityReport(tolerance=1e-3)
    source = {"y": np.array([[1.0, 100.0]], dtype=np.float32)}
    report.add_case("close", source, {"y": np.array([[1.0005, 100.05]], dtype=np.float32)})
    assert report.passed  # 0.05 on 100 is within 1e-3 * (1 + 100)
    entry = report.outputs["y"]
    assert abs(entry.max_abs - 0.05) < 1e-3 and abs(entry.max_rel - 5e-4) < 1e-5
    report.add_case("far", source, {"y": np.array([[1.01, 100.0]], dtype=np.float32)})
    assert not report.passed and entry.mismatched == 1 and entry.elements == 4
    assert report.lines() == [f"y: max abs error {entry.max_abs:.3g}, max rel error {entry.max_rel:.3g}"
                              " (1 of 4 values past tolerance 0.001)"]
    assert report.cases == ["close", "far"]


def test_exact_outputs_nan_and_shapes() -> None:
    report = ParityReport(tolerance=1e-6)
    report.add_case("labels", {"label": np.array([1, 2, 3]), "p": np.array([np.nan, 1.0])},
                    {"label": np.array([1, 2, 4]), "p": np.array([np.nan, 1.0])})
    assert report.outputs["label"].describe(1e-6) == "label: 1 of 3 values differ (compared exactly)"
    assert report.outputs["p"].passed  # NaN where the source has NaN agrees
    squeezed = ParityReport(tolerance=1e-6)
    squeezed.add_case("regressor", {"label": np.array([1.5, 2.5])}, {"label": np.array([[1.5], [2.5]])})
    assert squeezed.passed  # [n] against [n, 1]
    wrong = ParityReport(tolerance=1e-6)
    wrong.add_case("shape", {"y": np.zeros((2, 3))}, {"y": np.zeros((3, 2))})
    wrong.add_case("missing", {"z": np.zeros(1)}, {})
    assert wrong.lines() == ["y: shape [3, 2] where the source gives [2, 3]",
                             "z: missing from the converted model's outputs"]
