# Two commands for a newcomer:  `make demo` (main job end to end)  and  `make test`.
# Every target creates .venv when it is missing; nothing needs installing by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian data and tools used by the demo and the benchmarks
APT_PACKAGES := dataset-fashion-mnist pngquant
# the real-browser test of the web page (headless Chromium driven by Selenium)
TEST_APT_PACKAGES := chromium chromium-driver

.PHONY: setup apt apt-test lint test demo bench bench-data clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-ray.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q -r requirements-ray.txt
	touch $@

setup: $(VENV)/.installed

apt:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(APT_PACKAGES); }

apt-test:
	@dpkg -s $(TEST_APT_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(TEST_APT_PACKAGES); }

# ruff (rules in pyproject.toml) over the tree; mypy over the public face (files listed in pyproject.toml)
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: setup apt-test
	$(PY) -m pytest

demo: setup apt
	$(PY) -m encoder.cli.demo --out runs/demo

# Few-colour images made by others for the palette bench (Debian's desktop-base wallpapers),
# unpacked under data/ without installing the package; then data/photos200, a folder of 200
# photos and photo-like wallpapers (Debian wallpaper packages, scikit-image, scikit-learn).
bench-data: setup
	@[ -d data/desktop-base ] || { mkdir -p data/pkgs && cd data/pkgs && apt-get download desktop-base \
	  && dpkg -x desktop-base_*.deb ../desktop-base; }
	$(PY) bench/photo_folder.py

bench: setup apt bench-data
	for b in bench/*_bench.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
