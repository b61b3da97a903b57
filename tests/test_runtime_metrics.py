"""Metrics against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.contract import LayerSpec
from runtime.core.errors import RuntimeInputError
from runtime.metrics import (
    EnergyTable,
    depth_from_disparity,
    energy_metrics,
    fps,
    load_energy_table,
    percentiles_ms,
    sparsity_metrics,
    stereo_errors,
    summarize_errors,
)

LAYERS = [LayerSpec("a", neurons=10, fan_out=2.0), LayerSpec("b", neurons=30, fan_out=0.5)]
SPIKES = {"a": 8.0, "b": 6.0}  # totals over 4 steps


def test_firing_rates_and_sparsity():
    m = sparsity_metrics(SPIKES, 4, LAYERS)
    assert m["firing_rate"] == {"a": pytest.approx(8 / 40), "b": pytest.approx(6 / 120)}  # 0.2, 0.05
    assert m["mean_firing_rate"] == pytest.approx(14 / 160)  # 0.0875
    assert m["network_sparsity"] == pytest.approx(1 - 0.0875)
    assert m["spikes_per_step"] == pytest.approx(3.5)
    assert m["neurons"] == 40


def test_synops_and_energy():
    m = energy_metrics(SPIKES, 4, LAYERS, dense_macs=100.0, table=EnergyTable())
    assert m["synops_per_step"] == pytest.approx((8 * 2.0 + 6 * 0.5) / 4)  # 4.75
    assert m["energy_synops_uj"] == pytest.approx(4.75 * 0.9e-6)
    assert m["energy_dense_uj"] == pytest.approx(100 * 4.6e-6)
    assert m["energy_per_step_uj"] == pytest.approx(464.275e-6)
    other = energy_metrics(
        SPIKES, 4, LAYERS, dense_macs=100.0, table=EnergyTable(pj_per_ac=1.0, pj_per_mac=0.0)
    )
    assert other["energy_per_step_uj"] == pytest.approx(4.75e-6)


def test_no_steps_gives_none_not_nan():
    assert sparsity_metrics(SPIKES, 0, LAYERS)["network_sparsity"] is None
    assert energy_metrics(SPIKES, 0, LAYERS, 1.0, EnergyTable())["energy_per_step_uj"] is None
    assert percentiles_ms([])["p50"] is None and fps([]) is None


def test_latency_percentiles_and_fps():
    p = percentiles_ms([0.001, 0.002, 0.003, 0.004])
    assert p["mean"] == pytest.approx(2.5)
    assert p["p50"] == pytest.approx(2.5)
    assert p["p95"] == pytest.approx(3.85)  # linear interpolation at rank 2.85
    assert p["p99"] == pytest.approx(3.97)
    assert fps([0.001, 0.002, 0.003, 0.004]) == pytest.approx(400.0)


FB = 20.0
GT = np.array([[10.0, 5.0, np.nan], [0.0, 4.0, 20.0]], np.float32)
PRED = np.array([[9.5, 7.0, 3.0], [1.0, -2.0, 20.0]], np.float32)


def test_stereo_errors_by_hand():
    e = stereo_errors(PRED, GT, FB)
    assert e.valid == 4  # NaN and 0 are invalid
    np.testing.assert_allclose(e.disparity_px, [0.5, 2.0, 6.0, 0.0])
    # depth errors: |20/9.5 - 2|, |20/7 - 4|, |20/max(-2, 1) - 5|, |1 - 1|
    np.testing.assert_allclose(e.depth_m, [20 / 9.5 - 2, 4 - 20 / 7, 15.0, 0.0], rtol=1e-6)
    s = summarize_errors([e])
    assert s["valid_pixels"] == 4 and s["windows"] == 1 and s["windows_without_valid_pixels"] == 0
    assert s["mean_disparity_error_px"] == pytest.approx(2.125)
    assert s["one_pixel_accuracy_pct"] == pytest.approx(50.0)
    assert s["mean_depth_error_cm"] == pytest.approx(406.2030075, rel=1e-6)
    assert s["median_depth_error_cm"] == pytest.approx(62.40601504, rel=1e-6)


def test_pooling_and_empty_windows():
    empty = stereo_errors(PRED, np.full_like(GT, np.nan), FB)
    assert empty.valid == 0
    pooled = summarize_errors([stereo_errors(PRED, GT, FB), empty])
    assert pooled["windows"] == 2 and pooled["windows_without_valid_pixels"] == 1
    assert pooled["mean_disparity_error_px"] == pytest.approx(2.125)
    none = summarize_errors([empty])
    assert none["valid_pixels"] == 0
    for key in (
        "mean_depth_error_cm",
        "median_depth_error_cm",
        "mean_disparity_error_px",
        "one_pixel_accuracy_pct",
    ):
        assert none[key] is None


def test_nonpositive_and_nan_predictions_stay_finite():
    pred = np.array([[0.0, -5.0, np.nan]], np.float32)
    gt = np.array([[2.0, 2.0, 2.0]], np.float32)
    s = summarize_errors([stereo_errors(pred, gt, FB, min_disparity=0.5)])
    assert all(math.isfinite(s[k]) for k in ("mean_depth_error_cm", "median_depth_error_cm"))
    assert s["mean_depth_error_cm"] == pytest.approx((20 / 0.5 - 10) * 100)
    assert depth_from_disparity(np.array([0.0]), FB)[0] == pytest.approx(20.0)


def test_without_fb_only_disparity_metrics():
    s = summarize_errors([stereo_errors(PRED, GT, None)])
    assert s["mean_disparity_error_px"] == pytest.approx(2.125)
    assert s["mean_depth_error_cm"] is None


def test_energy_table_file(tmp_path):
    good = tmp_path / "e.json"
    good.write_text(json.dumps({"pj_per_ac": 0.03, "pj_per_mac": 0.2}))
    assert load_energy_table(good) == EnergyTable(0.03, 0.2)
    partial = tmp_path / "p.json"
    partial.write_text('{"pj_per_mac": 3.1}')
    assert load_energy_table(partial) == EnergyTable(0.9, 3.1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"pj_per_ac": -1}', "pj_per_ac must be a non-negative number"),
        ('{"pj_per_flop": 1}', "unknown key 'pj_per_flop'"),
    ],
)
def test_bad_energy_table(tmp_path, text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(RuntimeInputError, match=message):
        load_energy_table(bad)
    with pytest.raises(RuntimeInputError, match="no such file"):
        load_energy_table(tmp_path / "absent.json")
