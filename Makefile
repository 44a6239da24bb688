# Two entry points for a fresh machine: `make demo` and `make test`.
# Both build .venv from pyproject.toml first (durable-rules compiles with the machine's gcc).
# `make test` also installs, when run as root with apt-get, the system programs some tests
# drive for real (tmux, headless Chromium, zsh, a single-node SLURM with munge); without
# them those tests skip and say what to install.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := tmux chromium zsh slurm-wlm munge
# The peers bench/run.py measures expwatch against (bench/peers.py); py-spy for bench/profile.py.
BENCH_PACKAGES := fail2ban

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install system-packages bench-packages demo test bench fuzz
install: $(STAMP)

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing system packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "note: not installing $$missing (needs root and apt-get); the tests that drive them will skip"; \
	fi

demo: $(STAMP)
	$(VENV)/bin/expwatch demo

test: $(STAMP) system-packages
	$(VENV)/bin/python -m pytest -q tests

# The fuzz suite alone, with 20x the inputs CI gives it (profiles in tests/fuzz_profiles.py).
fuzz: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m fuzz --hypothesis-profile=fuzz-long tests/test_fuzz_loaders.py tests/test_fuzz_watcher.py

bench-packages: $(STAMP)
	@[ -x $(VENV)/bin/py-spy ] || $(VENV)/bin/pip install --quiet py-spy
	@$(MAKE) --no-print-directory system-packages SYSTEM_PACKAGES="$(BENCH_PACKAGES)"

bench: $(STAMP) bench-packages
	$(VENV)/bin/python bench/run.py
