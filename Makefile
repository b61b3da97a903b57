# One entry point for people and CI. `make demo` and `make test` set everything up first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; on a CUDA host override, e.g. TORCH=torch==2.13.0
TORCH  ?= torch==2.13.0
STEPS  ?= 40

.PHONY: setup demo demo-fine demo-c12 demo-full test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[compile,train,dev,test]'
	$(PY) -m compiler.fused_kernel   # build the fused neurons' C++ kernel now (cached; training falls back without it)
	$(PY) -m compiler.stepnorm       # and the per-step BatchNorm kernel of the multi-step mode (likewise)
	touch $@

# The shipped trained model (SpikeDHS-Stereo reduced to 96x128, trained on synthetic data; docs/training.md)
demo: setup
	$(PY) -m compiler.build genotypes/stereo_small.yaml --weights models/stereo_small.pt -o build/stereo_small.onnx
	$(PY) -m runtime.stream --onnx build/stereo_small.onnx --max-steps $(STEPS) --burn-in 2

# The same network on a finer disparity grid (features at 1/2 resolution, 8 disparities of 2 px): more precise,
# 2.7x the MACs (docs/training.md, "The finer disparity grid")
demo-fine: setup
	$(PY) -m compiler.build genotypes/stereo_small_fine.yaml --weights models/stereo_small_fine.pt -o build/stereo_small_fine.onnx
	$(PY) -m runtime.stream --onnx build/stereo_small_fine.onnx --max-steps $(STEPS) --burn-in 2

# The same graph at the paper's width C=12 (3.9x demo-fine's MACs; docs/training.md, "Step af")
demo-c12: setup
	$(PY) -m compiler.build genotypes/stereo_fine_c12.yaml --weights models/stereo_fine_c12.pt -o build/stereo_fine_c12.onnx
	$(PY) -m runtime.stream --onnx build/stereo_fine_c12.onnx --max-steps $(STEPS) --burn-in 2

# The full-size SpikeDHS-Stereo genotype, untrained (several seconds per step on 2 CPU cores)
demo-full: setup
	$(PY) -m compiler.build genotypes/stereo.yaml -o build/stereo.onnx
	$(PY) -m runtime.stream --onnx build/stereo.onnx --max-steps 6

# One pytest worker per core (pytest-xdist; each test keeps torch at one thread): `make test PYTEST=-n0` runs serially
PYTEST ?= -n auto
test: setup
	$(PY) -m pytest -q $(PYTEST)

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) benchmarks/bench_deploy.py --sizes full,demo --paper --steps 5
	$(PY) benchmarks/bench_stream.py --steps 3

clean:
	rm -rf build .pytest_cache
