# The two set-up commands of the README. Both create the same virtual environment (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test env clean

$(BIN)/memtasks: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned (torch==2.13.0) in pyproject.toml; see the README for a CUDA build
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(BIN)/memtasks

env: $(BIN)/memtasks

# The main job on CPU: the smoke benchmark matrix, then its leaderboard.
demo: env
	$(BIN)/memtasks matrix smoke --runs-dir runs
	$(BIN)/memtasks leaderboard runs --group smoke -o runs/smoke/leaderboard.md

# The whole test suite (CPU only, no network).
test: env
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs/smoke
