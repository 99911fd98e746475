# The set-up commands of the README. All create the same virtual environment (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo smoke test env clean

$(BIN)/memtasks: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned (torch==2.13.0) in pyproject.toml; see the README for the CPU and CUDA builds
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(BIN)/memtasks

env: $(BIN)/memtasks

# The main job on CPU, a real finding in a few minutes: copy learnt by the NTM and the DNC but not
# by an LSTM of the same size, their generalisation to longer sequences, and the learning-curve
# figure. Re-running it skips the finished runs and prints the comparison again.
demo: env
	$(BIN)/memtasks matrix demo --runs-dir runs
	$(BIN)/memtasks compare ntm dnc lstm --task copy --group demo --runs-dir runs --out runs/demo/figures --wandb disabled
	@echo "demo: 'solved seeds' and 'to solve' say which models learnt copy (lengths 1-20) and when; rows 30, 50, 100 are lengths never trained on."
	@echo "demo: learning curves in runs/demo/figures/learning_copy.png, generalisation in runs/demo/figures/generalisation_copy.png; records in runs/demo/"

# The pipeline check: every task x every model, tiny budgets (the numbers mean nothing).
smoke: env
	$(BIN)/memtasks matrix smoke --runs-dir runs
	$(BIN)/memtasks leaderboard runs --group smoke -o runs/smoke/leaderboard.md

# The whole test suite (CPU only, no network).
test: env
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs/smoke runs/demo
