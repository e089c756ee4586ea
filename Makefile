# FAMix sweeps: install, run sweeps, reports, tests, benchmarks.
#   make sweep SWEEP=sweeps/ablation.yaml [PROFILE=smoke|paper] [BACKEND=local|ray|slurm] [ARGS="key=value ..."]
#     (without PROFILE / BACKEND: the sweep file's default_profile and backend.kind)
#   make status|report SWEEP=sweeps/ablation.yaml [ARGS="the sweep's key=value ..."]
#   make test            (lint-imports, then pytest)
#   make bench
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SWEEP ?= sweeps/ablation.yaml
# empty: the sweep file's own default_profile (smoke unless it names another) and backend.kind (local)
PROFILE ?=
BACKEND ?=
RUN_DIR ?= runs
ARGS ?=
PYTEST_ARGS ?=
PROFILE_ARG = $(if $(PROFILE),--profile $(PROFILE))
BACKEND_ARG = $(if $(BACKEND),--backend $(BACKEND))
# idle OpenMP threads sleep instead of spinning: on a busy machine spinning 2-thread torch runs ~50x slower
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.PHONY: install check-sweep sweep plan status report lint-imports test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,system-metrics]'
	touch $@

# a target naming a sweep refuses an empty SWEEP= in one line, before anything is installed (argparse's usage
# block named `sweep`, not SWEEP=); status and report follow the backend the sweep ran on, and say that they
# ignore a BACKEND=. The values reach the shell through the environment: a quote in them cannot break the line.
check-sweep:
	@case "$$MAKE_SWEEP" in *[![:space:]]*) ;; *) echo "make $(GOAL): SWEEP= is empty; give a sweep file, e.g. SWEEP=sweeps/ablation.yaml" >&2; exit 2;; esac
	@case "$(GOAL):$$MAKE_BACKEND" in status:*[![:space:]]*|report:*[![:space:]]*) \
	  echo "note: make $(GOAL) ignores BACKEND=$$MAKE_BACKEND: it reads the run dir, whichever backend ran the sweep" >&2;; esac
check-sweep: export MAKE_SWEEP = $(SWEEP)
check-sweep: export MAKE_BACKEND = $(BACKEND)
GOAL = $(firstword $(filter sweep plan status report,$(MAKECMDGOALS)))

sweep: check-sweep install
	$(VENV)/bin/famix sweep run $(SWEEP) $(PROFILE_ARG) $(BACKEND_ARG) --run-dir $(RUN_DIR) $(ARGS)

plan: check-sweep install
	$(VENV)/bin/famix sweep plan $(SWEEP) $(PROFILE_ARG) $(BACKEND_ARG) --run-dir $(RUN_DIR) $(ARGS)

status: check-sweep install
	$(VENV)/bin/famix sweep status $(SWEEP) $(PROFILE_ARG) --run-dir $(RUN_DIR) $(ARGS)

report: check-sweep install
	$(VENV)/bin/famix report $(SWEEP) $(PROFILE_ARG) --run-dir $(RUN_DIR) $(ARGS)

# imports go one way (orchestrator -> reports -> famix_core; backends independent): [tool.importlinter] in pyproject.toml
lint-imports: install
	$(VENV)/bin/lint-imports

test: lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/run_all.py

clean:  # deletes RUN_DIR only where it is a famix run dir (its mlflow.db or store/), or missing
	@case '$(RUN_DIR)' in ''|.|./|/|..|../|*' '*) echo "make clean: RUN_DIR='$(RUN_DIR)' is not one run dir; nothing deleted" >&2; exit 2;; esac
	@if [ -e '$(RUN_DIR)' ] && [ ! -e '$(RUN_DIR)/mlflow.db' ] && [ ! -d '$(RUN_DIR)/store' ]; then \
	  echo "make clean: $(RUN_DIR) holds no famix run (no mlflow.db or store/); nothing deleted" >&2; exit 2; fi
	rm -rf '$(RUN_DIR)' .pytest_cache
