# Two commands on a fresh machine: `make demo` (install, run the main job on the
# bundled default model) and `make test` (install dev extras, run the tests).
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= out/demo

.PHONY: demo test install dev bench docs mutants clean

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) view
	touch $@

$(VENV)/.installed-dev: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) dev
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/pixio depth samples/ -o $(DEMO_OUT)/depth --vis
	@echo "depth maps (16-bit PNG, millimetres) and pictures (*_vis.png) are in $(DEMO_OUT)/depth"

test: dev
	$(BIN)/python -m pytest  # a suite that collects nothing exits 5: a failure, as it should be

bench: dev
	$(BIN)/python -m benchmarks.run_all

mutants: dev  # hours on 2 cores: not in CI; writes the score table of docs/development.md
	$(BIN)/python scripts/mutants.py

docs: dev
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf out build site *.egg-info
