# The two commands of the README. Each creates .venv on first use and installs the project into it.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The Debian packages are looked for (and installed where missing) once per virtual environment:
# a machine that cannot install them is not asked again at every `make test`.
DEBIAN_STAMP := $(VENV)/.debian-packages

.PHONY: run test test-all lint web-assets debian-packages

# npm (for web-assets) before the install; order-only, so that checking for it rebuilds nothing.
$(STAMP): pyproject.toml web/package-lock.json | $(DEBIAN_STAMP)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,test]'
	$(MAKE) --no-print-directory web-assets
	touch $(STAMP)

# onnxruntime-web (pinned by web/package-lock.json) from the npm registry, copied into the package
# for the explorer's in-browser classifier and `export --format web`. Without npm the explorer
# still serves everything else, and says what the browser classifier is missing.
web-assets:
	@if command -v npm >/dev/null && (cd web && npm ci --no-audit --no-fund --silent && npm run --silent build); then :; \
	else echo "note: onnxruntime-web not bundled (needs npm and the npm registry): the browser tests skip"; fi

# The Debian packages the suite uses, installed where missing and where the machine allows (root,
# apt-get): npm, which copies onnxruntime-web into the package; Chromium, which the explorer's
# browser tests drive; the Fashion-MNIST IDX files of the training tests; g++, with which inductor
# compiles PyTorch's fast path (`mobilenet.optimize`, the compiled training step). Without them
# those tests skip or generate their images, and the library falls back to what runs, and says so;
# a failed install is a note, not a failure. `make debian-packages` tries again.
$(DEBIAN_STAMP):
	@$(MAKE) --no-print-directory debian-packages
	@mkdir -p $(VENV) && touch $@

debian-packages:
	@missing=""; \
	command -v npm >/dev/null || missing="npm"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	[ -n "$$CXX" ] || command -v g++ >/dev/null || missing="$$missing g++"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "note: could not install$$missing; the tests that need them skip or fall back, saying why"; \
	  else echo "note: missing$$missing (apt-get install as root); the tests that need them skip or fall back"; fi; \
	fi

# The main job on its embedded default: what MobileNet 1.0-224 costs, what separable convolutions
# save, and the published ImageNet weights naming the photos that ship with the dependencies.
run: $(STAMP)
	$(VENV)/bin/mobilenet cost
	$(VENV)/bin/mobilenet compare
	$(VENV)/bin/mobilenet classify

# The test suite in one pytest process (tests needing ../shared/assets skip where it is absent,
# those marked `compiler` where no C++ compiler is found),
# all but the tests marked slow: about 8 minutes on 2 cores, where the 79 slow ones (end-to-end
# exports, compiles, DDP restarts, kills) take 23 more. `make test-all` runs them too. Its last
# line is pytest's own summary. Exit status 5, "no tests collected" (a -k or -m in PYTEST_ARGS
# that matches nothing), is not a failure. (The suite once ran a process per file because
# OpenVINO crashed long-lived processes; one Core per process fixed that, and
# tests/test_reliability.py guards it.)
PYTEST_ARGS ?= -m "not slow"
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-all: $(STAMP)
	$(MAKE) --no-print-directory test PYTEST_ARGS=

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
