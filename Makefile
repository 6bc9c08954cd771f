# slm: the two commands a new user needs are `make demo` and `make test`; both set up .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all install services demo test soak fuzz-collect coeffs bench bench-device bench-esp32 bench-sim bench-host lint accuracy clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "slm needs Python 3.10 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The main job on an embedded default: virtual boards on a simulated square evening and the live monitor on them.
# DURATION=S runs for S seconds and prints the summary (no terminal needed).
demo: $(STAMP)
	@bash tests/ensure_services.sh demo
	$(BIN)/slm demo $(if $(DURATION),--duration $(DURATION))

# The broker and database the network tests start for themselves (Mosquitto, PostgreSQL): installed when missing.
services:
	@bash tests/ensure_services.sh

# Four workers on two cores, one test file each at a time (a file's fixtures stay in one process): many tests wait on
# paced virtual boards, a broker or a browser, so four overlap their waits (7 min here; two workers took 12 under load).
test: $(STAMP) services
	$(BIN)/python -m pytest -q -n 4 --dist loadfile --durations=15

# Long soak and fuzz runs, not part of `make test`.
soak: $(STAMP) services
	$(BIN)/python -m pytest -q -m slow

# 100,000 malformed and hostile payloads through the collector (a sample of them runs in `make test`).
fuzz-collect: $(STAMP) services
	$(BIN)/python -m pytest -q -m slow tests/test_collect_fuzz.py

coeffs: $(STAMP)
	$(BIN)/python -m slm.weighting_design
	$(BIN)/python -m slm.eq_table

bench: $(STAMP)
	$(BIN)/python bench/bench_kernel.py

# The kernel's xtensawin machine code executed under qemu-xtensa (installs qemu-user and the lx106 toolchain from
# Debian when run as root; skips with a message otherwise): instructions and cycles per sample on an ESP32.
bench-esp32: $(STAMP)
	$(BIN)/python bench/esp32_bench.py

# The device application beside the meter: judging, the device's record, the display (unix port).
bench-device: $(STAMP)
	$(BIN)/python bench/bench_device.py

bench-sim: $(STAMP)
	$(BIN)/python bench/bench_sim.py

bench-host: $(STAMP)
	$(BIN)/python bench/bench_host.py
	$(BIN)/python bench/bench_monitor.py
	$(BIN)/python bench/bench_deploy.py
	$(BIN)/python bench/bench_startup.py

accuracy: $(STAMP)
	$(BIN)/python -m tests.accuracy_table

MPY_STUBS := $(VENV)/mpy-stubs
$(MPY_STUBS): pyproject.toml $(STAMP)
	rm -rf $(MPY_STUBS)
	$(BIN)/pip install --quiet --target $(MPY_STUBS) "$$($(BIN)/python -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print([r for r in d["project"]["optional-dependencies"]["lint"] if "esp32-stubs" in r][0])')"

lint: $(MPY_STUBS)
	cd firmware && MYPYPATH=../$(MPY_STUBS) ../$(BIN)/python -m mypy --config-file mypy.ini --custom-typeshed-dir ../$(MPY_STUBS) $$(ls *.py | grep -v __init__)

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis .mypy_cache
