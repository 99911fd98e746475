# The set-up commands of the README. All create the same virtual environment (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo smoke test env clean reference figures

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

# The reference benchmark behind leaderboard.md (memtasks/presets/reference.toml): tuning phase, then
# every task x every model x 3 seeds; about 15 core-hours on CPU. Resumes: finished runs are skipped.
reference: env
	$(BIN)/memtasks matrix reference --runs-dir runs --wandb disabled

# leaderboard.md and the figures of docs/reproduction.md from the reference records (no training).
CMP := $(BIN)/memtasks compare --runs-dir runs --group reference --wandb disabled
INSPECT := $(BIN)/memtasks inspect
figures: env
	$(BIN)/memtasks leaderboard runs --group reference -o leaderboard.md --force
	$(CMP) ntm dnc lstm --task copy --out docs/figures
	$(CMP) ntm dnc lstm --task repeat_copy --out docs/figures
	$(CMP) ntm dnc lstm --task associative_recall --out docs/figures
	$(CMP) ntm dnc lstm --task priority_sort --out docs/figures
	$(CMP) ntm dnc lstm gru esn --task dynamic_ngrams --out docs/figures
	$(CMP) lstm gru rnn indrnn ntm dnc --task adding --out docs/figures
	$(CMP) lstm gru rnn indrnn ntm dnc --task delayed_xor --out docs/figures
	$(CMP) lstm gru rnn ntm dnc --task binary_addition --out docs/figures
	$(CMP) lstm gru rnn ntm dnc --task binary_addition_online --out docs/figures
	$(CMP) gru0 gru1 gru2 gru3 gru --out docs/figures/gru_variants
	mkdir -p docs/figures/inspect
	for m in ntm dnc lstm; do for n in 20 100; do \
	  $(INSPECT) runs/reference/copy/$$m/seed-0 --length $$n --png docs/figures/inspect/copy_$${m}_$$n.png; done; done
	$(INSPECT) runs/reference/copy/ntm/seed-2 --length 120 --png docs/figures/inspect/copy_ntm_seed2_120.png
	for m in ntm dnc lstm; do \
	  $(INSPECT) runs/reference/associative_recall/$$m/seed-0 --length 6 --png docs/figures/inspect/associative_recall_$$m.png; done

# The whole test suite (CPU only, no network).
test: env
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs/smoke runs/demo
