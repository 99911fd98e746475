"""The ``demo`` preset behind ``make demo``: copy x (ntm, dnc, lstm) at equal parameter and sequence
budgets, early stopping on, and the Makefile's comparison naming the same models and group."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from memtasks.matrix.spec import PRESETS, expand, load_spec

ROOT = Path(__file__).resolve().parents[1]


def _make_recipe(target: str) -> list[list[str]]:
    """The command lines of a Makefile target, split into words (``$(BIN)/`` dropped)."""
    text = (ROOT / "Makefile").read_text()
    block = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert block, f"no {target} target in the Makefile"
    return [shlex.split(line.strip().lstrip("@").replace("$(BIN)/", "")) for line in block.group(1).splitlines()]


def test_demo_preset_is_copy_ntm_dnc_lstm_at_equal_budgets() -> None:
    import memtasks.models  # noqa: F401  (registers the models)

    assert "demo" in PRESETS
    spec = load_spec("demo")
    cells = expand(spec)
    assert {c.task for c in cells} == {"copy"}
    assert {c.model for c in cells} == {"ntm", "dnc", "lstm"}
    assert len(cells) == 3 * len(spec.seeds) and len(spec.seeds) >= 1
    assert {(c.sequences, c.param_budget, c.batch_size, c.eval_every) for c in cells} == {(60_000, 60_000, 32, 6_000)}
    assert all(c.early_stop and c.group == "demo" for c in cells)
    assert {tuple(c.task_params["generalise"]) for c in cells} == {(30, 50, 100)}


def test_demo_models_have_the_reference_presets_sizes() -> None:
    """What demo.toml says: its models are the reference preset's copy models (same parameter budget,
    batch and task), so the demo's records read beside the leaderboard's copy table; its recipe
    (each family's own optimiser) and its shorter budget are what differ."""
    demo = expand(load_spec("demo"))
    ref = expand(load_spec("reference"), tasks=["copy"], models=sorted({c.model for c in demo}), seeds=[0])
    def sized(c):  # the model, its size, the batch and the task's parameters but its generalisation lengths
        return c.model, c.param_budget, c.batch_size, repr(sorted((k, v) for k, v in c.task_params.items() if k != "generalise"))

    assert {sized(c) for c in demo} == {sized(c) for c in ref}
    assert {c.recipe for c in demo} == {"family"} and {c.recipe for c in ref} == {"standard"}
    assert max(c.sequences for c in demo) < min(c.sequences for c in ref)


def test_make_demo_runs_the_preset_and_compares_its_models() -> None:
    lines = _make_recipe("demo")
    matrix = next(words for words in lines if words[:2] == ["memtasks", "matrix"])
    compare = next(words for words in lines if words[:2] == ["memtasks", "compare"])
    assert matrix[2] == "demo"
    spec = load_spec("demo")
    models = compare[2:compare.index("--task")]
    assert set(models) == set(spec.models)
    assert compare[compare.index("--task") + 1] == "copy"
    assert compare[compare.index("--group") + 1] == spec.group
    out = compare[compare.index("--out") + 1]
    assert out.startswith(f"runs/{spec.group}/")
    assert any(f"{out}/learning_copy.png" in " ".join(words) for words in lines), "the summary names the figure"


def test_make_smoke_is_the_pipeline_check() -> None:
    assert any(words[:3] == ["memtasks", "matrix", "smoke"] for words in _make_recipe("smoke"))
