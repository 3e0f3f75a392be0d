# The single entry point. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= edgekit-out/all-MiniLM-L6-v2

.PHONY: install demo test bench clean

# One environment, pinned by constraints.txt (a set known to install together).
# torch==2.13.0 is the CPU build: plain pip takes it from this machine's disk.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

## Compile the embedded all-MiniLM-L6-v2 for cpu and intel-cpu and print the report table.
demo: install
	$(BIN)/edgekit compile --target cpu --target intel-cpu -o $(OUT)

## Run the test suite (tiny models built by the tests, plus one run on the real MiniLM).
test: install
	$(BIN)/python -m pytest -q

## Measure: compile all-MiniLM-L6-v2 and print the report table and the compile time.
bench: install
	$(BIN)/python benchmarks/compile_minilm.py

clean:
	rm -rf $(VENV) edgekit-out .pytest_cache
