"""The Stream API: windows, state across chunks, burn-in, resets, crops and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from contract_models import initial_state, reference_step, stereo_model
from fake_source import FakeRecording, identity_encoder

from runtime.core.errors import RuntimeInputError
from runtime.data.options import RecordingOptions
from runtime.data.sources import Window
from runtime.stream import Stream


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    stereo_model(path)
    return path


def _stream(model_path, recording=None, **kwargs) -> Stream:
    rec = recording if recording is not None else FakeRecording(seconds=0.5)
    return Stream(model_path, device="cpu", recording=rec, encoder=identity_encoder, **kwargs)


def test_stream_matches_reference(model_path):
    rec = FakeRecording(seconds=0.5)
    results = list(_stream(model_path, rec, max_steps=6))
    assert [r.index for r in results] == [0, 1, 2, 3, 4, 5]
    assert [(r.t0_us, r.t1_us) for r in results[:2]] == [(0, 50_000), (50_000, 100_000)]
    state = initial_state()
    for r in results:
        disp, state, spikes = reference_step(
            rec.events("left", r.t0_us, r.t1_us), rec.events("right", r.t0_us, r.t1_us), state
        )
        np.testing.assert_allclose(r.disparity, disp, rtol=1e-5, atol=1e-5)
        assert r.spikes == spikes
        assert r.gt is not None and r.valid_pixels == 8 * 12 - 2 * 12  # top quarter NaN
        assert set(r.timings_s) == {"decode", "encode", "model", "metrics", "total"}


def test_windows_align_to_ground_truth(model_path):
    # deliberately changed: windows used to exist only at ground-truth maps (skipping 120-240 ms);
    # now they tile back to back, those between maps without ground truth and not scored
    rec = FakeRecording(seconds=0.3)
    rec.gt_timestamps_us = np.array([30_000, 70_000, 120_000, 290_000])  # a window needs 50 ms of events
    stream = _stream(model_path, rec)
    results = list(stream)
    assert [(r.index, r.t0_us, r.t1_us, r.gt is not None) for r in results] == [
        (1, 20_000, 70_000, True),
        (2, 70_000, 120_000, True),
        (2, 120_000, 176_666, False),  # 170 ms between two maps: three windows of 56.7 ms
        (3, 176_666, 233_333, False),
        (3, 233_333, 290_000, True),
    ]
    np.testing.assert_array_equal(results[0].gt, rec.disparity(1))
    assert stream.report()["accuracy"]["windows"] == 3  # only the windows with ground truth count
    no_gt = FakeRecording(seconds=0.3, gt=False)
    no_gt.t_start_us = 10_000
    results = list(_stream(model_path, no_gt))
    assert [(r.index, r.t1_us) for r in results] == [
        (0, 60_000),
        (1, 110_000),
        (2, 160_000),
        (3, 210_000),
        (4, 260_000),
    ]
    assert all(r.gt is None for r in results)


def test_start_option(model_path):
    results = list(_stream(model_path, max_steps=2, start_s=0.1))
    assert [r.index for r in results] == [2, 3]


def _frames(n: int):
    rec = FakeRecording(seconds=1.0)
    out = []
    for i in range(n):
        t0, t1 = i * 50_000, (i + 1) * 50_000
        out.append(
            Window(i, t0, t1, rec.events("left", t0, t1), rec.events("right", t0, t1), rec.disparity(i))
        )
    return out


def test_chunked_streaming_equals_one_run(model_path):
    frames = _frames(9)
    whole = [r.disparity for r in _stream(model_path).run(frames)]
    # same Stream, three calls
    s = _stream(model_path)
    chunked = [r.disparity for chunk in (frames[:2], frames[2:7], frames[7:]) for r in s.run(chunk)]
    # two Streams, the state handed over
    first = _stream(model_path)
    handed = [r.disparity for r in first.run(frames[:4])]
    second = _stream(model_path, io_binding=True)
    second.set_state(first.state)
    handed += [r.disparity for r in second.run(frames[4:])]
    for a, b, c in zip(whole, chunked, handed, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)


def test_chunked_source_iteration_equals_one_run(model_path):
    whole = [r.disparity for r in _stream(model_path, max_steps=6)]
    first = _stream(model_path, max_steps=3)
    part = [r.disparity for r in first]
    second = _stream(model_path, max_steps=3, start_s=0.15)
    second.set_state(first.state)
    part += [r.disparity for r in second]
    for a, b in zip(whole, part, strict=True):
        np.testing.assert_array_equal(a, b)


def test_reset_every(model_path):
    frames = _frames(5)
    reset = [r.disparity for r in _stream(model_path, reset_every=2).run(frames)]
    fresh = [r.disparity for r in _stream(model_path).run(frames[2:4])]
    plain = [r.disparity for r in _stream(model_path).run(frames)]
    np.testing.assert_array_equal(reset[2], fresh[0])  # state zeroed before step 2
    np.testing.assert_array_equal(reset[3], fresh[1])  # and carried again after it
    np.testing.assert_array_equal(reset[:2], plain[:2])
    assert not np.array_equal(reset[2], plain[2])


def test_burn_in_and_report(model_path):
    rec = FakeRecording(seconds=1.0, invalid_gt_index=3)
    s = _stream(model_path, rec, max_steps=6, burn_in=2)
    results = list(s)
    assert [r.counted for r in results] == [False, False, True, True, True, True]
    report = s.report()
    json.dumps(report, allow_nan=False)  # strict JSON, no NaN anywhere
    assert report["steps"] == {"total": 6, "burn_in": 2, "counted": 4, "reset_every": None}
    spikes = {name: sum(r.spikes[name] for r in results[2:]) for name in ("layer0", "layer1")}
    neurons = 4 * 8 * 12
    assert report["sparsity"]["firing_rate"]["layer0"] == pytest.approx(spikes["layer0"] / (neurons * 4))
    assert report["sparsity"]["network_sparsity"] == pytest.approx(
        1 - (spikes["layer0"] + spikes["layer1"]) / (2 * neurons * 4)
    )
    synops = spikes["layer0"] * 4.0 / 4  # fan-out 4 for layer0, 0 for layer1
    assert report["energy"]["synops_per_step"] == pytest.approx(synops)
    assert report["energy"]["dense_macs_per_step"] == 2 * 5 * neurons
    assert report["energy"]["energy_per_step_uj"] == pytest.approx(
        (synops * 0.9 + 2 * 5 * neurons * 4.6) * 1e-6
    )
    acc = report["accuracy"]
    assert acc["windows"] == 4 and acc["windows_without_valid_pixels"] == 1
    assert acc["valid_pixels"] == 3 * (8 * 12 - 2 * 12)  # one of the 4 windows has none
    errs = np.concatenate([np.abs(r.disparity - r.gt)[np.isfinite(r.gt)] for r in results[2:]])
    assert acc["mean_disparity_error_px"] == pytest.approx(float(errs.mean()), rel=1e-5)
    assert acc["one_pixel_accuracy_pct"] == pytest.approx(float((errs <= 1).mean() * 100), rel=1e-6)
    assert report["speed"]["fps_model"] > 0 and report["speed"]["latency_ms"]["model"]["p99"] > 0
    assert report["source"]["fb"] == pytest.approx(19.941772)
    split = report["speed"]["time_per_step_ms"]
    assert split["other"] >= -1e-9
    assert sum(split[k] for k in ("decode", "encode", "model", "metrics", "other")) == pytest.approx(
        split["total"]
    )


def test_no_ground_truth_means_no_accuracy(model_path):
    s = _stream(model_path, FakeRecording(seconds=0.3, gt=False), max_steps=3)
    assert all(r.gt is None for r in s)
    assert s.report()["accuracy"] is None


def test_size_mismatch_needs_crop(model_path):
    big = FakeRecording(height=10, width=16, seconds=0.3)
    with pytest.raises(
        RuntimeInputError, match="recording is 16x10 but the model expects 12x8.*crop center"
    ):
        list(_stream(model_path, big, max_steps=1))
    results = list(_stream(model_path, big, max_steps=2, options=RecordingOptions(crop="center")))
    assert results[0].disparity.shape == (8, 12) and results[0].gt.shape == (8, 12)
    np.testing.assert_array_equal(results[0].gt, big.disparity(0)[1:9, 2:14])
    small = FakeRecording(height=6, width=12, seconds=0.3)
    with pytest.raises(RuntimeInputError, match="smaller than the model's input"):
        list(_stream(model_path, small, max_steps=1, options=RecordingOptions(crop="center")))


def test_feed_arrays_for_applications(model_path):
    s = Stream(model_path, device="cpu")
    frame = _frames(1)[0]
    r = s.feed_arrays(frame.left, frame.right)
    disp, _, _ = reference_step(frame.left, frame.right, initial_state())
    np.testing.assert_allclose(r.disparity, disp, rtol=1e-5, atol=1e-5)
    assert s.report()["steps"]["counted"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"burn_in": -1}, "burn_in: must be at least 0"),
        ({"max_steps": 0}, "max_steps: must be at least 1"),
        ({"reset_every": 0}, "reset_every: must be at least 1"),
        ({"options": RecordingOptions(crop="left")}, "crop"),
        ({"start_s": -1.0}, "start_s"),
    ],
)
def test_bad_options(model_path, kwargs, message):
    with pytest.raises(RuntimeInputError, match=message):
        _stream(model_path, **kwargs)


def test_summary_for_people(model_path):
    from runtime.report import format_summary

    s = _stream(model_path, FakeRecording(seconds=0.3, invalid_gt_index=0), max_steps=1)
    list(s)
    text = format_summary(s.report())
    assert "no valid ground-truth pixel in 1 windows" in text
    assert "layer0  firing rate" in text and "steps/s" in text and "uJ/step" in text
