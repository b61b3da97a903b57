"""The ONNX contract as the runtime reads it: a conforming model loads, each violation is one clear line."""

from __future__ import annotations

import json

import pytest
from contract_models import stereo_model

from runtime.core.errors import RuntimeInputError
from runtime.session import SNNSession


def _open(tmp_path, **kwargs):
    path = tmp_path / "m.onnx"
    stereo_model(path, **kwargs)
    return SNNSession(path, device="cpu")


def test_conforming_model_spec(tmp_path):
    spec = _open(tmp_path).spec
    assert spec.task == "stereo"
    assert (spec.encoding.kind, spec.encoding.bins, spec.encoding.height, spec.encoding.width) == (
        "sbt",
        5,
        8,
        12,
    )
    assert spec.encoding.window_us == 50_000
    assert [s.name for s in spec.states] == ["mem0", "mem1"]
    assert spec.states[0].shape == (4, 8, 12)
    assert [lay.name for lay in spec.layers] == ["layer0", "layer1"]
    assert spec.layers[0].neurons == 4 * 8 * 12 and spec.layers[0].fan_out == 4.0
    assert spec.dense_macs_per_step == 2 * 5 * 4 * 8 * 12
    assert spec.max_disparity == 37.0
    assert spec.genotype.startswith("schema: 1")


def test_fixed_batch_of_one_is_accepted(tmp_path):
    assert _open(tmp_path, fixed_batch=1).spec.task == "stereo"


def _error(tmp_path, **kwargs) -> str:
    with pytest.raises(RuntimeInputError) as info:
        _open(tmp_path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "key",
    [
        "snn.schema",
        "snn.task",
        "snn.genotype",
        "snn.encoding",
        "snn.layers",
        "snn.dense_macs",
        "snn.max_disparity",
    ],
)
def test_missing_metadata_is_named(tmp_path, key):
    assert key in _error(tmp_path, drop_metadata=(key,))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"snn.schema": "2"}, "snn.schema is '2'"),
        ({"snn.task": "segmentation"}, "snn.task 'segmentation'"),
        ({"snn.encoding": "{not json"}, "snn.encoding is not valid JSON"),
        (
            {"snn.encoding": json.dumps({"kind": "sbt", "bins": 5, "height": 8, "width": 12})},
            "lacks window_ms",
        ),
        (
            {
                "snn.encoding": json.dumps(
                    {"kind": "sbt", "window_ms": 50, "bins": 5, "height": 9, "width": 12}
                )
            },
            "height differs",
        ),
        (
            {"snn.layers": json.dumps({"layer0": {"neurons": 384, "fan_out": 4}})},
            "spikes.layer1 has no entry",
        ),
        (
            {"snn.layers": json.dumps({"layer0": {"neurons": 384}, "layer1": {"neurons": 1, "fan_out": 1}})},
            "snn.layers.layer0 must be an object with neurons and fan_out",
        ),
        (
            {
                "snn.layers": json.dumps(
                    {"layer0": {"neurons": -3, "fan_out": 4}, "layer1": {"neurons": 1, "fan_out": 1}}
                )
            },
            "snn.layers.layer0.neurons must be a positive integer",
        ),
        ({"snn.dense_macs": json.dumps([1, 2])}, "snn.dense_macs must be a JSON object"),
        ({"snn.max_disparity": "far"}, "snn.max_disparity 'far' is not a number"),
    ],
)
def test_bad_metadata_values(tmp_path, override, expected):
    assert expected in _error(tmp_path, metadata_override=override)


def test_extra_layer_in_metadata(tmp_path):
    layers = {
        "layer0": {"neurons": 1, "fan_out": 1},
        "layer1": {"neurons": 1, "fan_out": 1},
        "ghost": {"neurons": 1, "fan_out": 1},
    }
    assert "no output spikes.ghost" in _error(tmp_path, metadata_override={"snn.layers": json.dumps(layers)})


def test_unpaired_state_input(tmp_path):
    assert "state input state_in.mem1 has no output state_out.mem1" in _error(
        tmp_path, drop_outputs=("state_out.mem1",)
    )


def test_state_shapes_differ(tmp_path):
    msg = _error(tmp_path, bad_state_shape=True)
    assert "state_in.mem1 has shape [batch, 4, 8, 12] but state_out.mem1 has [batch, 1, 8, 12]" in msg


def test_state_order_differs(tmp_path):
    assert "another order" in _error(tmp_path, swap_state_outputs=True)


def test_symbolic_state_dimension(tmp_path):
    assert "must be fixed" in _error(tmp_path, symbolic_state=True)


def test_missing_data_output(tmp_path):
    assert "output 'disparity' missing" in _error(tmp_path, drop_outputs=("disparity",))


def test_no_spike_outputs(tmp_path):
    msg = _error(tmp_path, drop_outputs=("spikes.layer0", "spikes.layer1"))
    assert "no spikes.<layer> outputs" in msg


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n")
    with pytest.raises(RuntimeInputError, match="not an ONNX model"):
        SNNSession(bad, device="cpu")


def test_missing_model_file(tmp_path):
    with pytest.raises(RuntimeInputError, match="no such model file"):
        SNNSession(tmp_path / "absent.onnx", device="cpu")
