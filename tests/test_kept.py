"""Behaviour kept across restructurings: the current code against golden files exported by earlier code.

The files in ``tests/kept/`` were written by ``tests/kept/make_kept.py`` on the code before the
restructuring of issue 18. Each ONNX case is exported again here and both graphs run side by side in
ONNX Runtime for 20 steps with carried state: every output (data, every state, every spike count) must
be bit-identical. NIR graphs must be equal node for node, ``--check`` tables character for character.
A deliberate change of behaviour regenerates the files in its own commit and says why.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import ROOT
from kept_cases import CASES, CHECK_GENOTYPES, GENOTYPE_ROOTS, NIR_CASES, OLD_NODES, build_case

KEPT = ROOT / "tests" / "kept"
STEPS = 20


def _session(proto_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(proto_bytes, opts, providers=["CPUExecutionProvider"])


def _feeds(sess: ort.InferenceSession, rng: np.random.Generator, batch: int = 2) -> dict:
    feeds = {}
    for inp in sess.get_inputs():
        if inp.name.startswith("state_in."):
            continue
        shape = [batch if not isinstance(d, int) else d for d in inp.shape]
        if inp.name in ("left", "right"):
            x = rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), size=shape, p=[0.15, 0.7, 0.15])
        else:
            x = rng.normal(0.0, 1.0, shape).astype(np.float32)
        feeds[inp.name] = x
    return feeds


def _run(sess: ort.InferenceSession, all_feeds: list[dict]) -> list[dict[str, np.ndarray]]:
    state = {i.name: np.zeros([2 if not isinstance(d, int) else d for d in i.shape], np.float32)
             for i in sess.get_inputs() if i.name.startswith("state_in.")}
    names = [o.name for o in sess.get_outputs()]
    results = []
    for feeds in all_feeds:
        outs = dict(zip(names, sess.run(None, {**feeds, **state}), strict=True))
        state = {k.replace("state_out.", "state_in.", 1): v for k, v in outs.items() if k.startswith("state_out.")}
        results.append(outs)
    return results


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_graph_outputs_and_state_bit_identical(name):
    from compiler.export import to_onnx

    case = CASES[name]
    model = build_case(case)
    proto = to_onnx(model, **case.get("export", {}))
    if case.get("int8"):
        from runtime.calibrate import to_int8

        proto = to_int8(proto, None, 2)
    old = onnx.load(str(KEPT / f"{name}.onnx"))
    assert [i.name for i in proto.graph.input] == [i.name for i in old.graph.input]
    assert [o.name for o in proto.graph.output] == [o.name for o in old.graph.output]
    # the pinned old semantics are spelled "mixing: spike_sum" in the genotype since issue 19 (kept_cases.OLD_NODES)
    assert {p.key: p.value.replace("\nmixing: spike_sum\n", "\nmixing: spike\n") for p in proto.metadata_props} == {
        p.key: p.value for p in old.metadata_props}
    new_sess, old_sess = _session(proto.SerializeToString()), _session(old.SerializeToString())
    rng = np.random.default_rng(7)
    feeds = [_feeds(old_sess, rng) for _ in range(STEPS)]
    new_out, old_out = _run(new_sess, feeds), _run(old_sess, feeds)
    for t, (a, b) in enumerate(zip(new_out, old_out, strict=True)):
        for key in b:
            assert np.array_equal(a[key], b[key], equal_nan=True), f"step {t}: {key} differs"
    spike_keys = [k for k in old_out[-1] if k.startswith("spikes.")]
    if spike_keys:  # a spiking model must fire, or the case pins nothing
        assert sum(float(old_out[-1][k].sum()) for k in spike_keys) > 0
    data = list(old_out[-1])[0]
    assert np.ptp(old_out[-1][data]) > 0, "the data output must vary, or the case pins nothing"


def _nir_arrays(node) -> dict:
    out = {}
    for key, value in vars(node).items():
        if key == "metadata":
            out[key] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in (value or {}).items()}
        elif isinstance(value, np.ndarray):
            out[key] = (value.dtype.str, value.shape, value.tobytes())
        elif isinstance(value, dict):
            out[key] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in value.items()}
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("name", sorted(NIR_CASES))
def test_nir_graph_equal_node_for_node(name):
    import nir

    from compiler.nir_export import to_nir

    new = to_nir(build_case(NIR_CASES[name]))
    old = nir.read(str(KEPT / f"{name}.nir"))
    assert sorted(new.nodes) == sorted(old.nodes)
    assert sorted(map(tuple, new.edges)) == sorted(map(tuple, old.edges))
    # the file round trip normalises types, so compare both after one write/read
    buf = KEPT.parent / ".kept_tmp.nir"
    try:
        nir.write(str(buf), new)
        new = nir.read(str(buf))
    finally:
        buf.unlink(missing_ok=True)
    for key in old.nodes:
        assert type(new.nodes[key]) is type(old.nodes[key]), key
        assert _nir_arrays(new.nodes[key]) == _nir_arrays(old.nodes[key]), key


@pytest.mark.parametrize("stem", CHECK_GENOTYPES)
def test_check_table_identical(stem, monkeypatch):
    from compiler.build import main

    monkeypatch.chdir(GENOTYPE_ROOTS.get(stem, ROOT))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([f"genotypes/{stem}.yaml", "--check", *(f"--set={k}={v}" for k, v in OLD_NODES.items())]) == 0
    # the old tables name the old semantics "spike"; it is spelled spike_sum since issue 19
    assert buf.getvalue() == (KEPT / f"check_{stem}.txt").read_text().replace("mixing at the spike)",
                                                                             "mixing at the spike_sum)")
