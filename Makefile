# The two commands of the README. Each creates .venv on first use and installs the project into it.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,test]'
	touch $(STAMP)

# The main job on its embedded default: what MobileNet 1.0-224 costs, what separable convolutions
# save, and the published ImageNet weights naming the photos that ship with the dependencies.
run: $(STAMP)
	$(VENV)/bin/mobilenet cost
	$(VENV)/bin/mobilenet compare
	$(VENV)/bin/mobilenet classify

# The whole test suite (tests needing ../shared/assets skip where it is absent), one pytest process
# per test file: see tests/run_each_file.py for the crash that shared processes ran into.
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) tests/run_each_file.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
