# The two commands of the README. Each creates .venv on first use and installs the project into it.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,test]'
	touch $(STAMP)

# The main job on its embedded default: what MobileNet 1.0-224 costs, and what separable convolutions save.
run: $(STAMP)
	$(VENV)/bin/mobilenet cost
	$(VENV)/bin/mobilenet compare

# The whole test suite (tests needing ../shared/assets skip where it is absent). The training tests
# (torchrun, DataLoader workers) run in a pytest process of their own: in one process after the
# deployment tests have loaded ONNX Runtime, OpenVINO and NNCF, the DDP test crashed with SIGSEGV.
TRAINING_TESTS := tests/test_train.py tests/test_ddp.py
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest $(TRAINING_TESTS)
	$(PY) -m pytest $(addprefix --ignore=,$(TRAINING_TESTS))

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
