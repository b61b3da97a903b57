"""The Triton model repository of ``compiler.build --triton``: config.pbtxt parsed with Triton's own schema
(the ``model_config_pb2`` that tritonclient ships) and checked against the ONNX graph beside it. No Triton
server runs here; the last check steps the graph with ONNX Runtime the way the config tells Triton to
(zero initial state, each state's output fed back as its input) and compares with the contract's pairing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from helpers import GENOTYPES, SMALL

from compiler.build import main as build_main

DTYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32"}


def model_config_pb2():
    """tritonclient's generated module, loaded from its file: ``import tritonclient.grpc`` needs grpcio,
    which the project does not install (the module itself needs only protobuf)."""
    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MC = model_config_pb2()


def _dims(value) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module", params=["stereo_small", "cifar10"])
def repository(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp("repo")
    sets = [a for k, v in SMALL[name].items() for a in ("--set", f"{k}={v}")]
    assert build_main([str(GENOTYPES / f"{name}.yaml"), *sets, "--triton", str(root), "--triton-max-batch", "4",
                       "--quiet"]) == 0
    assert sorted(p.name for p in root.iterdir()) == [name]  # no staging folder left behind
    text = (root / name / "config.pbtxt").read_text()
    return name, text_format.Parse(text, MC.ModelConfig()), onnx.load(str(root / name / "1" / "model.onnx")), root


def test_config_parses_with_tritons_schema_and_matches_the_graph(repository):
    name, cfg, proto, _ = repository
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == (name, "onnxruntime", 4)
    assert cfg.WhichOneof("scheduling_choice") == "sequence_batching"
    seq = cfg.sequence_batching
    assert seq.WhichOneof("strategy_choice") == "direct" and len(seq.control_input) == 0
    inputs = {v.name: v for v in proto.graph.input}
    outputs = {v.name: v for v in proto.graph.output}
    for v in list(inputs.values()) + list(outputs.values()):
        assert _dims(v)[0] == "batch"
    data_in = [n for n in inputs if not n.startswith("state_in.")]
    assert [i.name for i in cfg.input] == data_in
    for i in cfg.input:
        assert list(i.dims) == _dims(inputs[i.name])[1:] and MC.DataType.Name(i.data_type) == "TYPE_FP32"
    # the ONNX Runtime backend's load check: every graph input is a config input, control input or state
    assert len(cfg.input) + len(seq.control_input) + len(seq.state) == len(inputs)
    state_in = [n for n in inputs if n.startswith("state_in.")]
    assert [s.input_name for s in seq.state] == state_in
    for s in seq.state:
        assert s.output_name == "state_out." + s.input_name.removeprefix("state_in.") and s.output_name in outputs
        v = inputs[s.input_name]
        assert list(s.dims) == _dims(v)[1:] and all(isinstance(d, int) and d > 0 for d in s.dims)
        assert MC.DataType.Name(s.data_type) == DTYPES[v.type.tensor_type.elem_type]
        (init,) = s.initial_state
        assert init.WhichOneof("state_data") == "zero_data" and init.zero_data
        assert list(init.dims) == list(s.dims) and init.data_type == s.data_type
    pairs = {s.input_name: s.output_name for s in seq.state}  # Triton server issue #8586 pairs by sorted name
    assert [pairs[k] for k in sorted(pairs)] == sorted(pairs.values())
    listed = {o.name: o for o in cfg.output}
    assert set(listed) == {n for n in outputs if not n.startswith("state_out.")}
    for o in cfg.output:
        dims = _dims(outputs[o.name])[1:]
        if o.name.startswith("spikes."):
            assert dims == [] and list(o.dims) == [1] and o.HasField("reshape") and list(o.reshape.shape) == []
        else:
            assert len(o.dims) == len(dims) and all(d > 0 for d in o.dims)
            assert all(a == b for a, b in zip(o.dims, dims, strict=True) if isinstance(b, int))


def test_schema_rejects_a_typo():
    """The check can fail: Triton's schema refuses unknown fields."""
    with pytest.raises(text_format.ParseError, match="input_nam"):
        text_format.Parse('sequence_batching { state [ { input_nam: "x" } ] }', MC.ModelConfig())


def test_stepping_as_the_config_says_matches_the_contract(repository):
    """ONNX Runtime driven by the config (zeros, then each state's output_name fed back to its input_name)
    against the contract's own pairing (state_out.<x> -> state_in.<x>, zeros first)."""
    name, cfg, proto, root = repository
    session = ort.InferenceSession(str(root / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(0)
    by_config = {s.input_name: np.zeros([1, *s.dims], np.float32) for s in cfg.sequence_batching.state}
    back = {s.output_name: s.input_name for s in cfg.sequence_batching.state}
    by_contract = {i.name: np.zeros([1, *i.shape[1:]], np.float32) for i in session.get_inputs()
                   if i.name.startswith("state_in.")}
    for _ in range(4):
        feeds = {i.name: np.sign(rng.standard_normal([1, *i.dims])).astype(np.float32) for i in cfg.input}
        out = dict(zip(names, session.run(None, {**feeds, **by_config}), strict=True))
        ref = dict(zip(names, session.run(None, {**feeds, **by_contract}), strict=True))
        by_config = {back[k]: v for k, v in out.items() if k in back}
        by_contract = {"state_in." + k.removeprefix("state_out."): v for k, v in ref.items()
                       if k.startswith("state_out.")}
        for o in cfg.output:
            np.testing.assert_array_equal(out[o.name], ref[o.name])
    assert any(float(np.abs(v).sum()) > 0 for v in by_config.values())  # the state carried something


def test_repository_is_replaced_whole_or_not_at_all(repository, tmp_path):
    """A second build replaces the model folder; a failing one leaves the previous one as it was."""
    from compiler.triton import write_repository

    name, _, proto, _ = repository

    def export(path):
        path.parent.mkdir(parents=True)
        onnx.save(proto, str(path))
        return proto

    def broken(path):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half a model")
        raise OSError("disk full")

    write_repository(tmp_path, name, export)
    before = (tmp_path / name / "config.pbtxt").read_text()
    write_repository(tmp_path, name, export, max_batch_size=2)
    assert "max_batch_size: 2" in (tmp_path / name / "config.pbtxt").read_text()
    with pytest.raises(OSError, match="disk full"):
        write_repository(tmp_path, name, broken)
    assert (tmp_path / name / "config.pbtxt").read_text() != before  # still the second one, untouched
    assert onnx.load(str(tmp_path / name / "1" / "model.onnx")).graph.name == proto.graph.name
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
