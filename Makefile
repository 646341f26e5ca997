# One-command set-up: `make demo` and `make test` work from a fresh clone (python3 with venv needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-video lint test bench clean browser gpu-kit

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,process]"
	# mediapipe without its opencv-contrib-python requirement: nerfstudio's headless cv2 serves both.
	$(BIN)/python -m pip install --no-deps mediapipe==1.2.2
	$(BIN)/ns-latentavatar-assets fetch
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/ns-latentavatar-demo $(DEMO_ARGS)

demo-video: setup
	$(BIN)/ns-latentavatar-demo-video $(DEMO_ARGS)

# Headless Chromium for the viewer's browser test (Debian's package; apt-get only when it is missing).
browser:
	@test -x /usr/bin/chromium || { apt-get update && apt-get install -y chromium; } \
	  || { sudo apt-get update && sudo apt-get install -y chromium; }

# Style (ruff, line length 120) and types (mypy); both come with the dev extra. `make test` runs them first.
lint: setup
	$(BIN)/ruff check latentavatar_ns scripts tests
	$(BIN)/mypy latentavatar_ns

# --durations: the slowest tests in every CI log, where the suite's time goes.
test: setup browser lint
	$(BIN)/python -m pytest --durations=25

bench: setup
	$(BIN)/python scripts/bench_quality.py

# Wheels for scripts/gpu_check.sh on a GPU node that has Python 3.12 and PyTorch but no package index
# (README: "Checking on a GPU"): what scripts/gpu_kit_requirements.txt lists, and this project's own
# wheel for its entry points. GPU_KIT_LPIPS=1 adds the LPIPS weights (69 MB) as an asset cache, .whl/cache/.
GPU_KIT_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
gpu-kit:
	mkdir -p .whl && rm -f .whl/*.whl && rm -rf .whl/cache
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(GPU_KIT_PLATFORMS) -d .whl -r scripts/gpu_kit_requirements.txt
	tmp=$$(mktemp -d) && cp -r pyproject.toml README.md latentavatar_ns "$$tmp" \
	  && $(PYTHON) -m pip wheel -q --no-deps -w .whl "$$tmp"; status=$$?; rm -rf "$$tmp"; exit $$status
	if [ -n "$(GPU_KIT_LPIPS)" ]; then $(MAKE) setup \
	  && LATENTAVATAR_CACHE=.whl/cache $(BIN)/ns-latentavatar-assets fetch lpips-vgg lpips-alex; fi
	du -sh .whl

clean:
	rm -rf $(VENV) demo_output demo_video_output
