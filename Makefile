# make demo  — set up .venv, build the core, run the policy comparison (report in
#              build/report), the demos, a host embedding and the web service example
# make test  — set up .venv, build the core, run the whole test suite
# make bench — run the benchmarks (never part of make test)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench build debug clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "setuptools>=77" "Cython>=3.1" "numpy>=2.0"
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test,sim]"
	touch $(STAMP)

# pip install -e does not rebuild on .pyx edits: always rebuild in place.
build: $(STAMP)
	@# After `make debug` the generated C++ has bounds checks: regenerate it.
	@if [ -f build/.debug ]; then rm -f build/.debug src/slotengine/_core.cpp; fi
	$(PY) setup.py -q build_ext --inplace

demo: build
	$(PY) -m slotengine simulate --preset small --out build/report
	$(PY) examples/rush_demo.py && $(PY) examples/fair_release.py && $(PY) examples/waitlist_demo.py \
		&& $(PY) examples/credit_demo.py && $(PY) examples/durable_demo.py \
		&& $(PY) examples/host_embedding.py && $(PY) examples/service/client_demo.py

test: build
	$(PY) -m pytest -q

bench: build
	$(PY) -m pytest benchmarks -q --benchmark-columns=median,ops,rounds --benchmark-sort=name

# Bounds checks on and the cython -a annotation (src/slotengine/_core.html).
debug: $(STAMP)
	SLOTENGINE_DEBUG=1 $(PY) setup.py -q build_ext --inplace --force
	mkdir -p build && touch build/.debug

clean:
	rm -rf $(VENV) build src/slotengine/_core.cpp src/slotengine/*.so src/slotengine/*.html .hypothesis .benchmarks
