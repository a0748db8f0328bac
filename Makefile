# Two commands for a fresh machine:
#   make demo   set up .venv and recognise the expressions in examples/
#   make test   set up .venv (every extra but [convert] + headless chromium + qemu-user) and run lint + the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv system browser clean

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,serve,scale,video,dev]"
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests drive: chromium for the end-to-end browser test (never a downloaded browser), and
# qemu-user to run the int8 models on an emulated CPU without AVX-512 or VNNI (tests/test_avx2_emulated.py)
system:
	@{ command -v chromium && command -v qemu-x86_64 && command -v gcc; } >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver qemu-user gcc >/dev/null; }

browser: system

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

demo: $(STAMP)
	$(VENV)/bin/ferlab predict examples/

test: $(STAMP) system lint
	$(PY) -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info
