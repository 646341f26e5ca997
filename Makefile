# One-command set-up: `make demo` and `make test` work from a fresh clone (python3 with venv needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-video test bench clean browser

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

test: setup browser
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python scripts/bench_quality.py

clean:
	rm -rf $(VENV) demo_output demo_video_output
