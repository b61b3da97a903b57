# One entry point for people and CI. `make demo` and `make test` set everything up first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; on a CUDA host override, e.g. TORCH=torch==2.13.0
TORCH  ?= torch==2.13.0
# full-size SpikeDHS-Stereo takes several seconds per step on 2 CPU cores
STEPS  ?= 6

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m compiler.build genotypes/stereo.yaml -o build/stereo.onnx
	$(PY) -m runtime.stream --onnx build/stereo.onnx --max-steps $(STEPS)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) -m compiler.bench --steps 3
	$(PY) benchmarks/bench_stream.py --steps 3

clean:
	rm -rf build .pytest_cache
