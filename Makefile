# Every target creates .venv and installs what it needs on first use.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.spnir-installed

.PHONY: test demo bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,all]'
	touch $@

# ruff's rules and mypy's settings are in pyproject.toml; a finding fails the target before the tests run.
test: $(STAMP)
	$(VENV)/bin/ruff check spnir tests bench examples
	$(VENV)/bin/mypy spnir
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: $(STAMP)
	$(VENV)/bin/spnir demo

# Long (hours on 2 CPU cores); bench/README.md holds the measured tables and the commands. SwinIR-light's
# interleaved table needs more than 24 GiB, so on such machines it is timed by allocator_step.py alone.
bench: $(STAMP)
	$(PY) bench/spn_step.py --floor --configs edsr-baseline,nafnet-width32,ffanet
	$(PY) bench/allocator_step.py --config swinir-light
	$(PY) bench/allocator_step.py --config edsr-baseline
	$(PY) bench/loop_overhead.py --configs edsr-baseline --negatives 1,4
	$(PY) bench/restore_speed.py
	$(PY) bench/bench_eval.py
	$(PY) bench/bench_data.py

clean-venv:
	rm -rf $(VENV)
