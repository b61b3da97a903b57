"""Sessions: state carried between steps (numpy and swapped IOBinding buffers) and provider choice."""

from __future__ import annotations

import numpy as np
import pytest
from contract_models import initial_state, random_sbt, reference_step, stereo_model

from runtime.core.errors import RuntimeInputError
from runtime.session import CPU_EP, CUDA_EP, TRT_EP, SNNSession, check_active, plan_providers


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    stereo_model(path)
    return path


def _inputs(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [(random_sbt(rng), random_sbt(rng)) for _ in range(n)]


@pytest.mark.parametrize("io_binding", [False, True])
def test_state_is_carried_like_the_reference(model_path, io_binding):
    session = SNNSession(model_path, device="cpu", io_binding=io_binding)
    assert session.io_binding is io_binding
    state = initial_state()
    for left, right in _inputs(6):
        out = session.step({"left": left, "right": right})
        disp, state, spikes = reference_step(left, right, state)
        np.testing.assert_allclose(out.output, disp, rtol=1e-5, atol=1e-5)
        assert out.spikes == spikes
        for name, value in session.state.items():
            np.testing.assert_allclose(value, state[name], rtol=1e-5, atol=1e-6)
    assert out.output.shape == (8, 12)
    assert out.model_s > 0


def test_output_depends_on_carried_state(model_path):
    session = SNNSession(model_path, device="cpu")
    left, right = _inputs(1)[0]
    first = session.step({"left": left, "right": right}).output
    second = session.step({"left": left, "right": right}).output
    assert not np.allclose(first, second)
    session.reset()
    np.testing.assert_array_equal(session.step({"left": left, "right": right}).output, first)


@pytest.mark.parametrize("io_binding", [False, True])
def test_set_state_continues_a_run(model_path, io_binding):
    frames = _inputs(5)
    one = SNNSession(model_path, device="cpu", io_binding=io_binding)
    outs = [one.step({"left": a, "right": b}).output for a, b in frames]
    first = SNNSession(model_path, device="cpu", io_binding=io_binding)
    for a, b in frames[:2]:
        first.step({"left": a, "right": b})
    second = SNNSession(model_path, device="cpu", io_binding=not io_binding)
    second.set_state(first.state)
    for (a, b), expected in zip(frames[2:], outs[2:], strict=True):
        np.testing.assert_array_equal(second.step({"left": a, "right": b}).output, expected)


def test_set_state_checks_shapes(model_path):
    session = SNNSession(model_path, device="cpu")
    with pytest.raises(RuntimeInputError, match="mem0 has shape"):
        session.set_state({"mem0": np.zeros((1, 3, 8, 12)), "mem1": np.zeros((1, 4, 8, 12))})
    with pytest.raises(RuntimeInputError, match="mem1 missing"):
        session.set_state({"mem0": np.zeros((1, 4, 8, 12))})


# ----------------------------------------------------------------------------- providers
ALL = [TRT_EP, CUDA_EP, CPU_EP]


def test_plan_cpu_and_auto():
    assert plan_providers("cpu", ALL) == [CPU_EP]
    assert plan_providers("auto", [CPU_EP]) == [CPU_EP]
    auto = plan_providers("auto", ALL)
    assert auto[0][0] == CUDA_EP and auto[-1] == CPU_EP  # TensorRT only when asked for


def test_plan_cuda_and_tensorrt():
    assert [p if isinstance(p, str) else p[0] for p in plan_providers("cuda", ALL)] == [CUDA_EP, CPU_EP]
    trt = plan_providers("tensorrt", ALL, trt_shapes="left:1x5x8x12", trt_cache="/tmp/c")
    assert [p if isinstance(p, str) else p[0] for p in trt] == [TRT_EP, CUDA_EP, CPU_EP]
    assert trt[0][1]["trt_profile_opt_shapes"] == "left:1x5x8x12"
    assert trt[0][1]["trt_engine_cache_path"] == "/tmp/c"


def test_plan_errors():
    with pytest.raises(RuntimeInputError, match="no CUDAExecutionProvider"):
        plan_providers("cuda", [CPU_EP])
    with pytest.raises(RuntimeInputError, match="no TensorrtExecutionProvider"):
        plan_providers("tensorrt", [CUDA_EP, CPU_EP])
    with pytest.raises(RuntimeInputError, match="'gpu' is not one of"):
        plan_providers("gpu", ALL)


def test_check_active_fallback():
    assert check_active("auto", [CPU_EP]) == "cpu"
    assert check_active("auto", [CUDA_EP, CPU_EP]) == "cuda"
    assert check_active("tensorrt", [TRT_EP, CUDA_EP, CPU_EP]) == "tensorrt"
    with pytest.raises(RuntimeInputError, match="--device: cuda: CUDAExecutionProvider could not start"):
        check_active("cuda", [CPU_EP])
    with pytest.raises(RuntimeInputError, match="TensorrtExecutionProvider could not start"):
        check_active("tensorrt", [CUDA_EP, CPU_EP])


def test_cuda_on_this_host(model_path):
    """--device cuda either runs on CUDA or fails with one clear line (a host without a usable GPU)."""
    try:
        session = SNNSession(model_path, device="cuda")
    except RuntimeInputError as exc:
        assert "\n" not in str(exc)
        assert "use --device cpu" in str(exc)
    else:
        assert session.device == "cuda" and session.io_binding
        left, right = _inputs(1)[0]
        disp, _, _ = reference_step(left, right, initial_state())
        np.testing.assert_allclose(session.step({"left": left, "right": right}).output, disp, atol=1e-4)


def test_auto_runs_somewhere(model_path):
    session = SNNSession(model_path, device="auto", threads=1)
    assert session.device in ("cpu", "cuda")
    assert session.providers[-1] == CPU_EP


def test_bad_threads(model_path):
    with pytest.raises(RuntimeInputError, match="--threads: must be at least 1"):
        SNNSession(model_path, device="cpu", threads=0)


def test_int8_graph_steps_bit_identical_without_the_nhwc_transformer():
    """The runtime leaves ONNX Runtime's NHWC layout transformer out (``DISABLED_OPTIMIZERS``, a speed
    choice): the trained int8 graph stepped 20 times through ``SNNSession`` gives, at every step, the
    bits of a plain session with the transformer on (output, every state, every spike count)."""
    import onnxruntime as ort
    from helpers import ROOT

    from runtime.session import DISABLED_OPTIMIZERS

    assert "NhwcTransformer" in DISABLED_OPTIMIZERS
    path = ROOT / "tests/kept/stereo_small_trained_int8.onnx"
    session = SNNSession(path, device="cpu", threads=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    plain = ort.InferenceSession(str(path), opts, providers=[CPU_EP])
    spec = session.spec
    state = {st.input_name: np.zeros([1, *st.shape], np.float32) for st in spec.states}
    rng = np.random.default_rng(5)
    shapes = {i.name: [1, *i.shape[1:]] for i in plain.get_inputs() if i.name in spec.data_inputs}
    fired = 0.0
    for t in range(20):
        feed = {k: rng.choice(np.array([-1, 0, 1], np.float32), size=s, p=[0.1, 0.8, 0.1]) for k, s in shapes.items()}
        out = session.step(feed)
        names = [spec.data_output, *(st.output_name for st in spec.states), *spec.spike_outputs]
        want = dict(zip(names, plain.run(names, {**feed, **state}), strict=True))
        state = {st.input_name: want[st.output_name] for st in spec.states}
        assert out.output.tobytes() == want[spec.data_output][0].tobytes(), f"step {t}"
        for st in spec.states:
            assert session.state[st.name].tobytes() == want[st.output_name].tobytes(), f"step {t}: {st.name}"
        assert out.spikes == {layer.name: float(np.sum(want[f"spikes.{layer.name}"])) for layer in spec.layers}
        fired += sum(out.spikes.values())
    assert fired > 0
