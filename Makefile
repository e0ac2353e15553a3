# Two commands for a newcomer:  `make demo` (main job end to end)  and  `make test`.
# Every target creates .venv when it is missing; nothing needs installing by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := dataset-fashion-mnist pngquant

.PHONY: setup apt test demo bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

# Debian data and tools used by the demo and the benchmarks (not by the tests).
apt:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(APT_PACKAGES); }

test: setup
	$(PY) -m pytest

demo: setup apt
	$(PY) -m encoder.cli.demo --out runs/demo

bench: setup apt
	for b in bench/*_bench.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
