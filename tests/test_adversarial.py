"""A hostile user against every command and flag (issue 11).

The rule: a wrong value gets one line naming what was wrong and what would be right, exit status
2, no traceback (``-v`` shows it); a fault the tool absorbs loses and duplicates nothing; nothing
is silently ignored. Each case below is one command line with the exit status it must give, the
words its message must contain (the flag, field or file, and what would be right) and whether it
may leave files behind.

Starting Python and torch costs seconds, so the cases run in batches: one subprocess runs many
of them through ``memtasks.cli.main``, each in its own folder, with the task and model registries
restored after each (a plugin one case registers is gone for the next). What an uncaught
exception would print is captured as it would be by a real process. A few cases run through the
real entry point (``python -m memtasks.cli``) as well.

Cases marked ``xfail(strict=True)`` are defects in files this test's author may not change; the
reason says what is wrong and what the fix should be.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FIXTURE_RUNS = Path(__file__).resolve().parent / "fixtures" / "runs"
EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "my_model.py"

# Small enough that a case that does reach training finishes in well under a second.
TINY = ["--sequences", "0", "--set", "eval_size=4", "--set", "task.max_length=4", "--set", "task.generalise=6", "--quiet"]
TINY_TRAIN = ["--sequences", "16", "--batch-size", "8", "--set", "eval_every=16", "--set", "eval_size=4",
              "--set", "task.max_length=3", "--set", "task.generalise=5", "--quiet"]


@dataclass
class Case:
    id: str
    argv: list[str]
    rc: int | tuple[int, ...] = 2
    needles: list[str] = field(default_factory=list)  # each must appear in stderr
    clean: bool = True  # nothing new is left in the case's folder
    files: dict[str, Any] = field(default_factory=dict)  # path -> text, {"hex": ...} or {"dir": True}
    fixture: str | None = None  # copy tests/fixtures/runs to this folder first
    trained: bool = False  # copy a finished run (copy x lstm, weights.pt) to runs/default/copy/lstm/seed-0 first
    xfail: str | None = None
    stdout_needles: list[str] = field(default_factory=list)
    new_files: list[str] = field(default_factory=list)  # each must be among the files left behind

    def job(self) -> dict[str, Any]:
        return {"id": self.id, "argv": self.argv, "files": self.files, "fixture": self.fixture, "trained": self.trained}


# --- files the cases read ---------------------------------------------------------------------

_MODEL_HEAD = """from dataclasses import dataclass
import torch
from torch import nn
from memtasks.models import MemoryModel, register_model
"""


def _model_plugin(name: str, config: str = "hidden_size: int = 4", init: str = "", forward: str = "return self.lin(x), state",
                  out: str = "d_out", frozen: bool = True, base: str = "MemoryModel", body: str = "") -> str:
    return _MODEL_HEAD + f"""
@dataclass{'(frozen=True)' if frozen else ''}
class C:
    {config}

@register_model({name!r}, config=C)
class M({base}):
{body}
    def __init__(self, d_in, d_out, config):
        super().__init__(d_in, d_out, config)
        self.lin = nn.Linear(d_in, {out})
        {init}
    def initial_state(self, batch_size, device=None):
        return torch.zeros(batch_size, 4, device=device)
    def forward(self, x, state=None):
        {forward}
"""


RESERVOIR = """
    size_knob = "reservoir_size"
    def reservoir_states(self, u, state=None):
        raise RuntimeError('kaboom in reservoir')
"""


def _task_plugin(name: str, field_line: str = "n: int = 3", validate: str = "pass", lo: str = "1",
                 generate: str | None = "raise RuntimeError('gen kaboom')") -> str:
    gen = f"    def _generate(self, lengths, generator):\n        {generate}\n" if generate else ""
    return f"""from dataclasses import dataclass
from memtasks.tasks.base import Task, register_task

@register_task({name!r})
@dataclass(frozen=True)
class T(Task):
    '''A throw-away task. Worked example: none.'''
    {field_line}
    def validate(self):
        {validate}
    @property
    def d_in(self): return 1
    @property
    def d_out(self): return 1
    @property
    def train_range(self): return ({lo}, 3)
    def max_steps(self, length): return length
{gen}"""


def _spec(body: str = "", tasks: str = "[tasks.copy]\nmax_length = 4\ngeneralise = [6]\n",
          models: str = "[models.lstm]\n") -> dict[str, str]:
    return {"spec.toml": body + "\n" + tasks + models}


SPEC = ["matrix", "spec.toml", "--dry-run"]
RUN = "runs/default/copy/lstm/seed-0"  # where a case with trained=True finds a finished run
CORRUPT_ONLY = {"r/g/copy/lstm/seed-0/result.json": "{not json"}


# --- the cases -----------------------------------------------------------------------------------

CASES: list[Case] = [
    # top level
    Case("cmd_typo", ["trian"], needles=["'trian'", "did you mean 'train'"]),
    Case("cmd_missing", [], needles=["COMMAND"]),
    Case("cmd_unknown_flag", ["--bogus"], needles=["--bogus"]),
    Case("sub_unknown_flag", ["show", "copy", "--bogus"], needles=["--bogus"]),
    # show
    Case("show_task_typo", ["show", "cpy"], needles=["'cpy'", "did you mean 'copy'"]),
    Case("show_task_empty", ["show", ""], needles=["unknown task ''"]),
    Case("show_length_zero", ["show", "copy", "--length", "0"], needles=["--length", ">= 1", "got 0"]),
    Case("show_length_negative", ["show", "copy", "--length", "-3"], needles=["--length", ">= 1"]),
    Case("show_length_text", ["show", "copy", "--length", "abc"], needles=["--length", "'abc'"]),
    Case("show_length_float", ["show", "copy", "--length", "1e3"], needles=["--length", "'1e3'"]),
    Case("show_length_huge", ["show", "copy", "--length", "1000000000"], needles=["--length 1000000000", "GiB", "shorter length"]),
    Case("show_length_below_task_min", ["show", "associative_recall", "--length", "1"], needles=["associative_recall.length=1", "[2,"]),
    Case("show_length_below_order", ["show", "dynamic_ngrams", "--length", "1"], needles=["--length 1", "order=6"]),
    Case("show_length_below_xor_min", ["show", "delayed_xor", "--length", "1"], needles=["--length 1", "T0 >= 10"]),
    Case("show_seed_negative", ["show", "copy", "--seed", "-1"], needles=["--seed", ">= 0"]),
    Case("show_seed_nan", ["show", "copy", "--seed", "nan"], needles=["--seed", "'nan'"]),
    Case("show_png_suffix", ["show", "copy", "--png", "out.txt"], needles=["--png out.txt", ".txt", ".png"]),
    Case("show_png_no_folder", ["show", "copy", "--png", "nofolder/x.png"], needles=["--png", "nofolder", "does not exist"]),
    Case("show_png_is_folder", ["show", "copy", "--png", "."], needles=["--png", "is a folder"]),
    Case("show_png_under_a_file", ["show", "copy", "--png", "afile/x.png"], files={"afile": "x"}, needles=["--png", "afile is a file, not a folder"]),
    Case("show_png_empty", ["show", "copy", "--png", ""], needles=["--png ''", "empty file name", ".png"]),
    # models, tasks
    Case("models_task_typo", ["models", "--task", "cpy"], needles=["did you mean 'copy'"]),
    Case("models_task_empty", ["models", "--task", ""], needles=["unknown task ''"]),
    # --plugin (every command that takes it loads it the same way)
    Case("plugin_missing_file", ["tasks", "--plugin", "nope.py"], needles=["nope.py", "does not exist"]),
    Case("plugin_empty", ["tasks", "--plugin", ""], needles=["--plugin ''", "empty"]),
    Case("plugin_is_folder", ["tasks", "--plugin", "plugdir"], files={"plugdir": {"dir": True}},
         needles=["--plugin plugdir", "is a folder", ".py file"]),
    Case("plugin_not_python", ["tasks", "--plugin", "notes.txt"], files={"notes.txt": "x\n"},
         needles=["notes.txt", "not a Python file", ".py"]),
    Case("plugin_unknown_module", ["tasks", "--plugin", "nosuch_mod_xyz"],
         needles=["nosuch_mod_xyz", "neither a .py file nor an importable module"]),
    Case("plugin_unknown_submodule", ["tasks", "--plugin", "memtasks.nosuch"], needles=["memtasks.nosuch", "No module"]),
    Case("plugin_syntax_error", ["tasks", "--plugin", "p.py"], files={"p.py": "def broken(:\n    pass\n"},
         needles=["p.py", "line 1", "SyntaxError"]),
    Case("plugin_import_fails", ["tasks", "--plugin", "p.py"], files={"p.py": "import nosuch_dependency_xyz\n"},
         needles=["p.py", "ModuleNotFoundError", "nosuch_dependency_xyz"]),
    Case("plugin_raises_at_import", ["tasks", "--plugin", "p.py"], files={"p.py": "raise RuntimeError('boom at import')\n"},
         needles=["p.py", "line 1", "boom at import"]),
    Case("plugin_registers_nothing", ["tasks", "--plugin", "p.py"], rc=0, files={"p.py": ""},
         needles=["--plugin p.py registered no task or model"]),
    Case("plugin_config_not_frozen", ["tasks", "--plugin", "p.py"], files={"p.py": _model_plugin("nf_m", frozen=False)},
         needles=["frozen dataclass"]),
    Case("plugin_name_clash", ["tasks", "--plugin", "p.py"], files={"p.py": _model_plugin("lstm")},
         needles=["'lstm' is already registered"]),
    Case("plugin_bad_name", ["tasks", "--plugin", "p.py"], files={"p.py": _model_plugin("Bad-Name")}, needles=["snake_case"]),
    Case("plugin_not_a_model", ["tasks", "--plugin", "p.py"], files={"p.py": _model_plugin("ns_m", base="nn.Module")},
         needles=["must subclass"]),
    Case("plugin_no_size_knob", ["tasks", "--plugin", "p.py"], files={"p.py": _model_plugin("nk_m", config="width: int = 4")},
         needles=["size_knob 'hidden_size'"]),
    Case("plugin_config_no_default", ["models", "--plugin", "p.py"], files={"p.py": _model_plugin("nd_m", config="hidden_size: int")},
         needles=["'hidden_size' has no default", "give every config field a default"]),
    Case("plugin_config_no_default_train", ["train", "--task", "copy", "--model", "nd_m", "--plugin", "p.py", *TINY],
         files={"p.py": _model_plugin("nd_m", config="hidden_size: int")}, needles=["'hidden_size' has no default"], clean=False),
    Case("plugin_forward_no_state", ["train", "--task", "copy", "--model", "ns_m", "--plugin", "p.py", *TINY_TRAIN], rc=1,
         files={"p.py": _model_plugin("ns_m", forward="return self.lin(x)")}, clean=False,
         needles=["breaks the model contract", "returned a Tensor"], new_files=["runs/default/copy/ns_m/seed-0/result.json"]),
    Case("plugin_forward_wrong_shape", ["train", "--task", "copy", "--model", "ws_m", "--plugin", "p.py", *TINY_TRAIN], rc=1,
         files={"p.py": _model_plugin("ws_m", out="d_out + 1")}, clean=False,
         needles=["breaks the model contract", "y has shape (2, 2, 9)"], new_files=["runs/default/copy/ws_m/seed-0/result.json"]),
    Case("plugin_forward_raises", ["train", "--task", "copy", "--model", "fr_m", "--plugin", "p.py", *TINY_TRAIN], rc=1,
         files={"p.py": _model_plugin("fr_m", forward="raise RuntimeError('kaboom in forward')")}, clean=False,
         needles=["kaboom in forward"], new_files=["runs/default/copy/fr_m/seed-0/result.json"]),
    Case("plugin_init_raises_models", ["models", "--task", "copy", "--plugin", "p.py"],
         files={"p.py": _model_plugin("ir_m", init="raise RuntimeError('kaboom in init')")},
         needles=["model 'ir_m'", "plugin code", "p.py", "kaboom in init"]),
    Case("plugin_init_raises_bench", ["bench", "models", "--models", "ir_m", "--plugin", "p.py", "--batch-size", "1"],
         files={"p.py": _model_plugin("ir_m", init="raise RuntimeError('kaboom in init')")},
         needles=["model 'ir_m'", "plugin code", "kaboom in init"]),
    Case("plugin_forward_raises_bench", ["bench", "models", "--models", "fr_m", "--plugin", "p.py", "--batch-size", "1"],
         files={"p.py": _model_plugin("fr_m", forward="raise RuntimeError('kaboom in forward')")},
         needles=["model 'fr_m'", "plugin code", "kaboom in forward"]),
    Case("plugin_forward_no_state_bench", ["bench", "models", "--models", "ns_m", "--plugin", "p.py", "--batch-size", "1"],
         files={"p.py": _model_plugin("ns_m", forward="return self.lin(x)")}, needles=["model 'ns_m'", "plugin code"]),
    Case("plugin_reservoir_raises_capacity", ["capacity", "--model", "rs_m", "--plugin", "p.py", "--sizes", "5", "--seeds", "0"],
         files={"p.py": _model_plugin("rs_m", config="reservoir_size: int = 5\n    seed: int = 0\n    input_scaling: float = 1.0\n    spectral_radius: float = 0.9",
                                      body=RESERVOIR)},
         needles=["model 'rs_m'", "plugin code", "kaboom in reservoir"]),
    Case("plugin_init_raises_train", ["train", "--task", "copy", "--model", "ir_m", "--plugin", "p.py", *TINY],
         files={"p.py": _model_plugin("ir_m", init="raise RuntimeError('kaboom in init')")}, clean=False,
         needles=["ir_m", "kaboom in init"]),
    Case("plugin_task_no_generate", ["tasks", "--plugin", "p.py"], files={"p.py": _task_plugin("ng_t", generate=None)},
         needles=["must implement _generate"]),
    Case("plugin_task_field_no_default", ["tasks", "--plugin", "p.py"], files={"p.py": _task_plugin("fd_t", field_line="n: int")},
         needles=["n have no default"]),
    Case("plugin_task_bad_range", ["tasks", "--plugin", "p.py"], files={"p.py": _task_plugin("br_t", lo="0")},
         needles=["br_t", "training range must satisfy 1 <= lo <= hi", "(0, 3)"]),
    Case("plugin_task_validate_show", ["show", "bv_t", "--plugin", "p.py"],
         files={"p.py": _task_plugin("bv_t", field_line="n: int = 0", validate="raise ValueError('bv_t.n must be >= 1')")},
         needles=["task 'bv_t'", "bv_t.n must be >= 1"]),
    Case("plugin_task_validate_models", ["models", "--task", "bv_t", "--plugin", "p.py"],
         files={"p.py": _task_plugin("bv_t", field_line="n: int = 0", validate="raise ValueError('bv_t.n must be >= 1')")},
         needles=["bv_t.n must be >= 1"]),
    Case("plugin_task_validate_bench", ["bench", "tasks", "--tasks", "bv_t", "--plugin", "p.py", "--batch-size", "1"],
         files={"p.py": _task_plugin("bv_t", field_line="n: int = 0", validate="raise ValueError('bv_t.n must be >= 1')")},
         needles=["bv_t.n must be >= 1"]),
    Case("plugin_task_validate_train", ["train", "--task", "bv_t", "--model", "lstm", "--plugin", "p.py", "--sequences", "0"],
         files={"p.py": _task_plugin("bv_t", field_line="n: int = 0", validate="raise ValueError('bv_t.n must be >= 1')")},
         needles=["bv_t.n must be >= 1"]),
    Case("plugin_task_generate_show", ["show", "gk_t", "--plugin", "p.py"], files={"p.py": _task_plugin("gk_t")},
         needles=["task 'gk_t'", "plugin code", "gen kaboom"]),
    Case("plugin_task_generate_bench", ["bench", "tasks", "--tasks", "gk_t", "--plugin", "p.py", "--batch-size", "1"],
         files={"p.py": _task_plugin("gk_t")}, needles=["task 'gk_t'", "gen kaboom"]),
    Case("plugin_task_generate_train", ["train", "--task", "gk_t", "--model", "lstm", "--plugin", "p.py", "--sequences", "0"],
         rc=(1, 2), files={"p.py": _task_plugin("gk_t")}, clean=False, needles=["gk_t", "gen kaboom"]),
    # train: --set on RunConfig fields
    Case("set_key_unknown", ["train", "--task", "copy", "--model", "lstm", "--set", "nosuch=1"], needles=["unknown --set key 'nosuch'", "allowed:"]),
    Case("set_key_typo", ["train", "--task", "copy", "--model", "lstm", "--set", "lrr=0.1"], needles=["'lrr'", "did you mean 'lr'"]),
    Case("set_no_equals", ["train", "--task", "copy", "--model", "lstm", "--set", "lr"], needles=["--set", "key=value", "'lr'"]),
    Case("set_empty_key", ["train", "--task", "copy", "--model", "lstm", "--set", "=3"], needles=["unknown --set key ''"]),
    Case("set_task_prefix_only", ["train", "--task", "copy", "--model", "lstm", "--set", "task."], needles=["key=value"]),
    Case("set_lr_text", ["train", "--task", "copy", "--model", "lstm", "--set", "lr=abc"], needles=["lr", "'abc'", "number"]),
    Case("set_lr_nan", ["train", "--task", "copy", "--model", "lstm", "--set", "lr=nan"], needles=["RunConfig.lr", "finite", "nan"]),
    Case("set_lr_inf", ["train", "--task", "copy", "--model", "lstm", "--set", "lr=inf"], needles=["RunConfig.lr", "finite"]),
    Case("set_lr_negative", ["train", "--task", "copy", "--model", "lstm", "--set", "lr=-1"], needles=["RunConfig.lr=-1.0", "(0.0, inf]"]),
    Case("set_lr_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "lr=0"], needles=["RunConfig.lr=0.0", "(0.0, inf]"]),
    Case("set_momentum_one", ["train", "--task", "copy", "--model", "lstm", "--set", "momentum=1"], needles=["RunConfig.momentum=1.0", "allowed"]),
    Case("set_momentum_negative", ["train", "--task", "copy", "--model", "lstm", "--set", "momentum=-0.1"], needles=["RunConfig.momentum"]),
    Case("set_clip_norm_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "clip_norm=0"], needles=["RunConfig.clip_norm"]),
    Case("set_clip_value_inf", ["train", "--task", "copy", "--model", "lstm", "--set", "clip_value=inf"], needles=["RunConfig.clip_value", "finite"]),
    Case("set_checkpoint_nan", ["train", "--task", "copy", "--model", "lstm", "--set", "checkpoint_every_s=nan"], needles=["checkpoint_every_s", "finite"]),
    Case("set_optimizer_unknown", ["train", "--task", "copy", "--model", "lstm", "--set", "optimizer=adamw"], needles=["RunConfig.optimizer='adamw'", "'adam'"]),
    Case("set_curriculum_unknown", ["train", "--task", "copy", "--model", "lstm", "--set", "curriculum=x"], needles=["RunConfig.curriculum", "'grow'"]),
    Case("set_device_unknown", ["train", "--task", "copy", "--model", "lstm", "--set", "device=tpu"], needles=["RunConfig.device='tpu'", "'cpu'"]),
    Case("set_threads_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "threads=0"], needles=["RunConfig.threads=0", "[1, 1024]"]),
    Case("set_threads_huge", ["train", "--task", "copy", "--model", "lstm", "--set", "threads=100000"], needles=["RunConfig.threads", "[1, 1024]"]),
    Case("set_seed_negative", ["train", "--task", "copy", "--model", "lstm", "--set", "seed=-1"], needles=["RunConfig.seed=-1"]),
    Case("set_sequences_float", ["train", "--task", "copy", "--model", "lstm", "--set", "sequences=1e3"], needles=["sequences", "integer", "'1e3'"]),
    Case("set_sequences_negative", ["train", "--task", "copy", "--model", "lstm", "--set", "sequences=-5"], needles=["RunConfig.sequences=-5"]),
    Case("set_batch_size_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "batch_size=0"], needles=["RunConfig.batch_size=0"]),
    Case("set_eval_every_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "eval_every=0"], needles=["RunConfig.eval_every=0"]),
    Case("set_eval_size_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "eval_size=0"], needles=["RunConfig.eval_size=0"]),
    Case("set_patience_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "patience=0"], needles=["RunConfig.patience=0"]),
    Case("set_bool_bad", ["train", "--task", "copy", "--model", "lstm", "--set", "early_stop=maybe"], needles=["early_stop", "true/false", "'maybe'"]),
    Case("set_param_budget_text", ["train", "--task", "copy", "--model", "lstm", "--set", "param_budget=abc"], needles=["param_budget", "'abc'"]),
    Case("set_task_params_key", ["train", "--task", "copy", "--model", "lstm", "--set", "task_params=x"], needles=["'task_params'", "task.<param>"]),
    Case("set_group_empty", ["train", "--task", "copy", "--model", "lstm", "--set", "group="], needles=["RunConfig.group", "non-empty"]),
    # train: --set task.<param>
    Case("set_task_unknown", ["train", "--task", "copy", "--model", "lstm", "--set", "task.nosuch=1"], needles=["copy task parameter key 'nosuch'", "allowed: bits"]),
    Case("set_task_typo", ["train", "--task", "copy", "--model", "lstm", "--set", "task.max_lenght=1"], needles=["'max_lenght'", "did you mean 'max_length'"]),
    Case("set_task_other_tasks_key", ["train", "--task", "adding", "--model", "lstm", "--set", "task.max_length=4"], needles=["adding task parameter key 'max_length'", "base_length"]),
    Case("set_task_text", ["train", "--task", "copy", "--model", "lstm", "--set", "task.max_length=abc"], needles=["max_length", "integer", "'abc'"]),
    Case("set_task_float", ["train", "--task", "copy", "--model", "lstm", "--set", "task.bits=1.5"], needles=["bits", "integer", "'1.5'"]),
    Case("set_task_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "task.max_length=0"], needles=["copy.max_length=0", "[1, 100000]"]),
    Case("set_task_huge", ["train", "--task", "copy", "--model", "lstm", "--set", "task.max_length=1000000000"], needles=["copy.max_length=1000000000", "[1, 100000]"]),
    Case("set_task_min_over_max", ["train", "--task", "copy", "--model", "lstm", "--set", "task.min_length=5", "--set", "task.max_length=3"],
         needles=["copy.max_length=3", "[5, 100000]"]),
    Case("set_task_bits_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "task.bits=0"], needles=["copy.bits=0", "[1, 1024]"]),
    Case("set_task_generalise_zero", ["train", "--task", "copy", "--model", "lstm", "--set", "task.generalise=0"], needles=["copy.generalise=0"]),
    Case("set_task_generalise_text", ["train", "--task", "copy", "--model", "lstm", "--set", "task.generalise=abc"], needles=["generalise", "'abc'"]),
    Case("set_task_generalise_repeated", ["train", "--task", "copy", "--model", "lstm", "--set", "task.generalise=6,6"],
         needles=["copy.generalise lists 6 more than once", "once"]),
    Case("set_task_generalise_too_long", ["train", "--task", "copy", "--model", "lstm", "--set", "task.generalise=100000"],
         needles=["generalisation length 100000", "GiB", "shorter length"], clean=False),
    # train: --set model.<param>
    Case("set_model_unknown", ["train", "--task", "copy", "--model", "lstm", "--set", "model.nosuch=1"], needles=["lstm hyper-parameter key 'nosuch'", "hidden_size"]),
    Case("set_model_other_family", ["train", "--task", "copy", "--model", "esn", "--set", "model.hidden_size=3"], needles=["esn hyper-parameter key 'hidden_size'", "reservoir_size"]),
    Case("set_model_float", ["train", "--task", "copy", "--model", "lstm", "--set", "model.hidden_size=1e9"], needles=["hidden_size", "integer"]),
    Case("set_model_empty", ["train", "--task", "copy", "--model", "lstm", "--set", "model.hidden_size="], needles=["hidden_size", "integer", "''"]),
    Case("set_model_zero", ["train", "--task", "copy", "--model", "lstm", *TINY, "--set", "model.hidden_size=0"], needles=["lstm.hidden_size=0", "[1, inf]"], clean=False),
    Case("set_model_negative", ["train", "--task", "copy", "--model", "lstm", *TINY, "--set", "model.hidden_size=-5"], needles=["lstm.hidden_size=-5"], clean=False),
    Case("set_model_layers_zero", ["train", "--task", "copy", "--model", "lstm", *TINY, "--set", "model.num_layers=0"], needles=["lstm.num_layers=0", "[1, 16]"], clean=False),
    Case("set_ntm_slots_zero", ["train", "--task", "copy", "--model", "ntm", *TINY, "--set", "model.memory_slots=0"], needles=["ntm.memory_slots=0"], clean=False),
    Case("set_ntm_slots_float", ["train", "--task", "copy", "--model", "ntm", *TINY, "--set", "model.memory_slots=1.5"], needles=["memory_slots", "integer"]),
    Case("set_dnc_heads_zero", ["train", "--task", "copy", "--model", "dnc", *TINY, "--set", "model.read_heads=0"], needles=["dnc.read_heads=0", "[1, 64]"], clean=False),
    Case("set_dnc_slots_huge", ["train", "--task", "copy", "--model", "dnc", *TINY, "--set", "model.memory_slots=100000000"], needles=["dnc.memory_slots=100000000", "65536"], clean=False),
    Case("set_esn_radius_nan", ["train", "--task", "copy", "--model", "esn", *TINY, "--set", "model.spectral_radius=nan"], needles=["esn.spectral_radius", "finite"], clean=False),
    Case("set_esn_size_zero", ["train", "--task", "copy", "--model", "esn", *TINY, "--set", "model.reservoir_size=0"], needles=["esn.reservoir_size=0"], clean=False),
    Case("set_model_huge", ["train", "--task", "copy", "--model", "lstm", *TINY, "--set", "model.hidden_size=100000000"], clean=False,
         needles=["hidden_size", "GiB"]),
    Case("set_ntm_slots_huge", ["train", "--task", "copy", "--model", "ntm", *TINY, "--set", "model.memory_slots=1000000000"], clean=False,
         needles=["memory_slots", "GiB"]),
    Case("set_esn_size_huge", ["train", "--task", "copy", "--model", "esn", *TINY, "--set", "model.reservoir_size=1000000"], clean=False,
         needles=["reservoir_size", "GiB"]),
    Case("set_esn_radius_huge", ["train", "--task", "copy", "--model", "esn", *TINY, "--set", "model.spectral_radius=1e39"], clean=False,
         needles=["spectral_radius"]),
    # train: flags
    Case("train_task_typo", ["train", "--task", "cpy", "--model", "lstm"], needles=["did you mean 'copy'"]),
    Case("train_model_typo", ["train", "--task", "copy", "--model", "lstn"], needles=["did you mean 'lstm'"], clean=False),
    Case("train_unknown_model_leaves_folder", ["train", "--task", "copy", "--model", "lstn"], needles=["did you mean 'lstm'"]),
    Case("train_missing_model", ["train", "--task", "copy"], needles=["--model"]),
    Case("train_sequences_negative", ["train", "--task", "copy", "--model", "lstm", "--sequences", "-1"], needles=["--sequences", ">= 0"]),
    Case("train_seed_text", ["train", "--task", "copy", "--model", "lstm", "--seed", "x"], needles=["--seed", "'x'"]),
    Case("train_batch_zero", ["train", "--task", "copy", "--model", "lstm", "--batch-size", "0"], needles=["--batch-size", ">= 1"]),
    Case("train_batch_huge", ["train", "--task", "copy", "--model", "lstm", *TINY, "--batch-size", "100000000"],
         needles=["training length", "100000000 sequence(s)", "GiB", "smaller batch"], clean=False),
    Case("train_eval_size_huge", ["train", "--task", "copy", "--model", "lstm", "--sequences", "0", "--set", "eval_size=100000000",
                                  "--set", "task.max_length=4", "--set", "task.generalise=6", "--quiet"],
         needles=["generalisation length", "GiB"], clean=False),
    Case("train_budget_zero", ["train", "--task", "copy", "--model", "lstm", "--param-budget", "0"], needles=["--param-budget", ">= 1"]),
    Case("train_budget_tiny", ["train", "--task", "copy", "--model", "lstm", *TINY, "--param-budget", "10"],
         needles=["param_budget=10", "nearest achievable", "hidden_size=1"], clean=False),
    Case("train_budget_huge", ["train", "--task", "copy", "--model", "lstm", *TINY, "--param-budget", "1000000000000"],
         needles=["param_budget=1,000,000,000,000", "GiB"], clean=False),
    Case("train_budget_and_knob", ["train", "--task", "copy", "--model", "lstm", *TINY, "--param-budget", "1000", "--set", "model.hidden_size=8"],
         needles=["param_budget", "hidden_size", "not both"], clean=False),
    Case("train_budget_esn_tiny", ["train", "--task", "copy", "--model", "esn", *TINY, "--param-budget", "10"],
         needles=["param_budget=10", "reservoir_size=1"], clean=False),
    Case("train_device_missing", ["train", "--task", "copy", "--model", "lstm", *TINY, "--device", "mps"], needles=["--device mps", "no MPS device"]),
    Case("train_device_unknown", ["train", "--task", "copy", "--model", "lstm", "--device", "tpu"], needles=["--device", "'tpu'"]),
    Case("train_wandb_unknown", ["train", "--task", "copy", "--model", "lstm", "--wandb", "bogus"], needles=["--wandb", "'bogus'"]),
    Case("train_runs_dir_is_file", ["train", "--task", "copy", "--model", "lstm", *TINY, "--runs-dir", "afile"], files={"afile": "x"},
         needles=["afile", "is a file, not a folder", "--runs-dir"]),
    Case("train_group_empty", ["train", "--task", "copy", "--model", "lstm", "--group", ""], needles=["RunConfig.group", "non-empty"]),
    Case("train_runs_dir_empty", ["train", "--task", "copy", "--model", "lstm", *TINY, "--runs-dir", ""], needles=["--runs-dir"]),
    Case("train_group_escapes", ["train", "--task", "copy", "--model", "lstm", *TINY, "--runs-dir", "r", "--group", "../escape"],
         needles=["group"]),
    Case("train_group_dot", ["train", "--task", "copy", "--model", "lstm", *TINY, "--group", "."], needles=["group"]),
    Case("train_group_nested", ["train", "--task", "copy", "--model", "lstm", *TINY, "--group", "a/b"], needles=["group"]),
    Case("train_seed_conflict", ["train", "--task", "copy", "--model", "lstm", *TINY, "--seed", "1", "--set", "seed=2"], needles=["seed"]),
    Case("train_set_repeated", ["train", "--task", "copy", "--model", "lstm", *TINY, "--set", "lr=0.001", "--set", "lr=0.002"],
         needles=["lr"]),
    Case("train_wrong_hparam_leaves_folder", ["train", "--task", "copy", "--model", "lstm", *TINY, "--set", "model.hidden_size=0"],
         needles=["lstm.hidden_size=0"]),
    # matrix: the spec file
    Case("matrix_preset_typo", ["matrix", "smok", "--dry-run"], needles=["'smok'", "did you mean 'smoke'"]),
    Case("matrix_spec_empty_name", ["matrix", "", "--dry-run"], needles=["''", "empty", "preset"]),
    Case("matrix_spec_missing", ["matrix", "nope.toml", "--dry-run"], needles=["nope.toml", "neither a preset"]),
    Case("matrix_spec_is_folder", ["matrix", "d.toml", "--dry-run"], files={"d.toml": {"dir": True}}, needles=["d.toml", "is a folder"]),
    Case("matrix_spec_bad_toml", SPEC, files={"spec.toml": "name = 'x'\n[tasks.copy\n"}, needles=["spec.toml", "invalid TOML", "line 2"]),
    Case("matrix_spec_binary", SPEC, files={"spec.toml": {"hex": "fffe00"}}, needles=["spec.toml", "not a text file", "UTF-8"]),
    Case("matrix_spec_empty_file", SPEC, files={"spec.toml": ""}, needles=["spec.toml", "[tasks] is empty"]),
    Case("matrix_spec_unknown_top", SPEC, files=_spec("seed = [0]\n"), needles=["top-level key 'seed'", "did you mean 'seeds'"]),
    Case("matrix_spec_seeds_text", SPEC, files=_spec("seeds = '0'\n"), needles=["seeds must be a non-empty list"]),
    Case("matrix_spec_seeds_empty", SPEC, files=_spec("seeds = []\n"), needles=["seeds must be a non-empty list"]),
    Case("matrix_spec_seeds_negative", SPEC, files=_spec("seeds = [-1]\n"), needles=["seed=-1", "[0, inf]"]),
    Case("matrix_spec_seeds_float", SPEC, files=_spec("seeds = [1.5]\n"), needles=["seed", "integer", "1.5"]),
    Case("matrix_spec_seeds_repeated", SPEC, rc=0, files=_spec("seeds = [0, 0]\n"), needles=["seeds lists 0 more than once"],
         stdout_needles=["1 cells"]),
    Case("matrix_spec_name_empty", SPEC, files=_spec("name = ''\n"), needles=["name must be a non-empty string"]),
    Case("matrix_spec_group_int", SPEC, files=_spec("group = 3\n"), needles=["group must be a non-empty string"]),
    Case("matrix_spec_description_int", SPEC, files=_spec("description = 3\n"), needles=["description must be a string"]),
    Case("matrix_spec_train_not_table", SPEC, files=_spec("train = 3\n"), needles=["[train] must be a table"]),
    Case("matrix_spec_tasks_not_table", SPEC, files={"spec.toml": "tasks = 3\n[models.lstm]\n"}, needles=["[tasks] must be a table"]),
    Case("matrix_spec_task_not_table", SPEC, files={"spec.toml": "[tasks]\ncopy = 3\n[models.lstm]\n"}, needles=["[tasks.copy] must be a table"]),
    Case("matrix_spec_task_train_not_table", SPEC, files=_spec(tasks="[tasks.copy]\ntrain = 3\n"), needles=["[tasks.copy.train] must be a table"]),
    Case("matrix_spec_model_train_not_table", SPEC, files=_spec(models="[models.lstm]\ntrain = 3\n"), needles=["[models.lstm.train] must be a table"]),
    Case("matrix_spec_no_tasks", SPEC, files={"spec.toml": "[tasks]\n[models.lstm]\n"}, needles=["[tasks] is empty"]),
    Case("matrix_spec_no_models", SPEC, files=_spec(models="[models]\n"), needles=["[models] is empty"]),
    Case("matrix_spec_task_typo", SPEC, files=_spec(tasks="[tasks.cpy]\n"), needles=["[tasks.cpy]", "did you mean 'copy'"]),
    Case("matrix_spec_model_typo", SPEC, files=_spec(models="[models.lstn]\n"), needles=["[models.lstn]", "did you mean 'lstm'"]),
    Case("matrix_spec_task_param_typo", SPEC, files=_spec(tasks="[tasks.copy]\nmax_lenght = 3\n"), needles=["'max_lenght'", "did you mean 'max_length'"]),
    Case("matrix_spec_task_param_text", SPEC, files=_spec(tasks="[tasks.copy]\nmax_length = '3'\n"), needles=["copy.max_length", "integer", "'3'"]),
    Case("matrix_spec_task_param_bool", SPEC, files=_spec(tasks="[tasks.copy]\nbits = true\n"), needles=["copy.bits", "integer", "True"]),
    Case("matrix_spec_generalise_int", SPEC, files=_spec(tasks="[tasks.copy]\ngeneralise = 6\n"), needles=["copy.generalise must be a list", "6"]),
    Case("matrix_spec_generalise_int_ar", SPEC, files=_spec(tasks="[tasks.associative_recall]\ngeneralise = 6\n"),
         needles=["associative_recall.generalise must be a list"]),
    Case("matrix_spec_generalise_table", SPEC, files=_spec(tasks="[tasks.copy]\ngeneralise = {a = 1}\n"), needles=["copy.generalise must be a list"]),
    Case("matrix_spec_generalise_repeated", SPEC, files=_spec(tasks="[tasks.copy]\ngeneralise = [6, 6]\n"), needles=["copy.generalise lists 6 more than once"]),
    Case("matrix_spec_generalise_too_long", SPEC, files=_spec(tasks="[tasks.copy]\ngeneralise = [100000]\n"),
         needles=["cell copy x lstm", "generalisation length 100000", "GiB"]),
    Case("matrix_spec_hparam_typo", SPEC, files=_spec(models="[models.lstm]\nhiden_size = 3\n"), needles=["'hiden_size'", "did you mean 'hidden_size'"]),
    Case("matrix_spec_hparam_text", SPEC, files=_spec(models="[models.lstm]\nhidden_size = '3'\n"), needles=["lstm.hidden_size", "integer"]),
    Case("matrix_spec_hparam_float", SPEC, files=_spec(models="[models.lstm]\nhidden_size = 3.5\n"), needles=["lstm.hidden_size", "3.5"]),
    Case("matrix_spec_hparam_huge", SPEC, files=_spec(models="[models.lstm]\nhidden_size = 100000000\n"),
         needles=["cell copy x lstm", "trainable parameters", "GiB", "smaller model"]),
    Case("matrix_spec_train_typo", SPEC, files=_spec("[train]\nlrr = 1\n"), needles=["[train]", "'lrr'", "did you mean 'lr'"]),
    Case("matrix_spec_train_text", SPEC, files=_spec("[train]\nlr = 'fast'\n"), needles=["RunConfig.lr", "'fast'"]),
    Case("matrix_spec_train_nan", SPEC, files=_spec("[train]\nlr = nan\n"), needles=["RunConfig.lr", "nan"]),
    Case("matrix_spec_train_sequences_nan", SPEC, files=_spec("[train]\nsequences = nan\n"), needles=["RunConfig.sequences", "integer"]),
    Case("matrix_spec_train_seed", SPEC, files=_spec("[train]\nseed = 3\n"), needles=["[train]", "'seed'"]),
    Case("matrix_spec_train_task_params", SPEC, files=_spec("[train]\ntask_params = {max_length = 3}\n"), needles=["'task_params'"]),
    Case("matrix_spec_task_train_bad", SPEC, files=_spec(tasks="[tasks.copy]\n[tasks.copy.train]\nlr = 0\n"), needles=["RunConfig.lr=0"]),
    Case("matrix_spec_model_train_unknown", SPEC, files=_spec(models="[models.lstm]\n[models.lstm.train]\nnosuch = 1\n"),
         needles=["[models.lstm.train]", "'nosuch'"]),
    Case("matrix_spec_budget_and_knob", SPEC, files=_spec("[train]\nparam_budget = 1000\n", models="[models.lstm]\nhidden_size = 4\n"),
         needles=["param_budget and hidden_size both set"]),
    Case("matrix_spec_budget_tiny", SPEC, files=_spec("[train]\nparam_budget = 10\n"), needles=["cell copy x lstm", "param_budget=10", "nearest achievable"]),
    Case("matrix_spec_batch_huge", SPEC, files=_spec("[train]\nbatch_size = 100000000\n"), needles=["cell copy x lstm", "training length", "GiB"]),
    # matrix: flags
    Case("matrix_tasks_unknown", ["matrix", "smoke", "--dry-run", "--tasks", "nosuch"], needles=["'nosuch'", "not in this matrix", "copy"]),
    Case("matrix_tasks_repeated", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "copy", "--models", "lstm"], rc=0,
         needles=["--tasks lists copy more than once"], stdout_needles=["1 cells"]),
    Case("matrix_models_typo", ["matrix", "smoke", "--dry-run", "--models", "lstn"], needles=["--models", "did you mean 'lstm'"]),
    Case("matrix_models_repeated", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "--models", "lstm", "lstm"], rc=0,
         needles=["--models lists lstm more than once"], stdout_needles=["1 cells"]),
    Case("matrix_seeds_negative", ["matrix", "smoke", "--dry-run", "--seeds", "-1"], needles=["--seeds", ">= 0"]),
    Case("matrix_seeds_repeated", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "--models", "lstm", "--seeds", "3", "3"], rc=0,
         needles=["--seeds lists 3 more than once"], stdout_needles=["1 cells"]),
    Case("matrix_workers_negative", ["matrix", "smoke", "--dry-run", "--workers", "-1"], needles=["--workers", ">= 1", "-1"]),
    Case("matrix_workers_huge", ["matrix", "smoke", "--dry-run", "--workers", "100000"], needles=["--workers"]),
    Case("matrix_workers_zero", ["matrix", "smoke", "--dry-run", "--workers", "0"], needles=["--workers", ">= 1"]),
    Case("matrix_workers_per_gpu_zero", ["matrix", "smoke", "--dry-run", "--workers-per-gpu", "0"], needles=["--workers-per-gpu"]),
    Case("matrix_executor_unknown", ["matrix", "smoke", "--dry-run", "--executor", "slurm"], needles=["--executor", "'slurm'"]),
    Case("matrix_set_typo", ["matrix", "smoke", "--dry-run", "--set", "lrr=1"], needles=["'lrr'", "did you mean 'lr'"]),
    Case("matrix_set_task_param", ["matrix", "smoke", "--dry-run", "--set", "task.max_length=0"], needles=["copy.max_length=0"]),
    Case("matrix_set_hparam_not_everywhere", ["matrix", "smoke", "--dry-run", "--set", "model.hidden_size=3"], needles=["esn hyper-parameter key 'hidden_size'"]),
    Case("matrix_set_seed", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "--models", "lstm", "--seeds", "0", "1", "--set", "seed=4"],
         needles=["--set seed=4", "--seeds"]),
    Case("matrix_set_task", ["matrix", "smoke", "--dry-run", "--set", "task=copy"], needles=["--set task=copy", "--tasks"]),
    Case("matrix_set_model", ["matrix", "smoke", "--dry-run", "--set", "model=lstm"], needles=["--set model=lstm", "--models"]),
    Case("matrix_set_group", ["matrix", "smoke", "--dry-run", "--set", "group=x"], needles=["--set group=x", "--group"]),
    Case("matrix_group_empty", ["matrix", "smoke", "--dry-run", "--group", ""], needles=["RunConfig.group"]),
    Case("matrix_plugin_broken", ["matrix", "smoke", "--dry-run", "--plugin", "p.py"], files={"p.py": "def broken(:\n"}, needles=["p.py", "SyntaxError"]),
    Case("matrix_plugin_model", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "--models", "mgu", "--plugin", str(EXAMPLE_PLUGIN)],
         rc=0, stdout_needles=["smoke/copy/mgu/seed-0", "1 cells"]),
    Case("matrix_runs_dir_is_file", ["matrix", "smoke", "--tasks", "copy", "--models", "lstm", "--runs-dir", "afile"],
         files={"afile": "x"}, needles=["afile", "not a folder"]),
    Case("matrix_group_escapes", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "--models", "lstm", "--group", "../x"], needles=["group"]),
    Case("matrix_spec_group_escapes", SPEC, files=_spec("group = '../up'\n"), needles=["group"]),
    Case("matrix_dry_run_runs_dir_is_file", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "--models", "lstm", "--runs-dir", "afile"],
         files={"afile": "x"}, needles=["afile", "not a folder"]),
    Case("matrix_ray_address_without_ray", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "--models", "lstm", "--ray-address", "foo"],
         needles=["--ray-address", "--executor ray"]),
    Case("matrix_workers_with_ray", ["matrix", "smoke", "--dry-run", "--tasks", "copy", "--models", "lstm", "--executor", "ray", "--workers", "2"],
         needles=["--workers", "ray"]),
    # leaderboard
    Case("leaderboard_missing_dir", ["leaderboard", "nope"], needles=["nope", "no such runs folder"]),
    Case("leaderboard_dir_is_file", ["leaderboard", "afile"], files={"afile": "x"}, needles=["afile", "not a folder"]),
    Case("leaderboard_empty_dir", ["leaderboard", "empty"], files={"empty": {"dir": True}}, needles=["no run records under empty"]),
    Case("leaderboard_out_suffix", ["leaderboard", "runs", "-o", "out.txt"], fixture="runs", needles=["-o out.txt", ".md"]),
    Case("leaderboard_out_folder", ["leaderboard", "runs", "-o", "."], fixture="runs", needles=["-o", "is a folder"]),
    Case("leaderboard_out_no_folder", ["leaderboard", "runs", "-o", "nofolder/x.md"], fixture="runs", needles=["nofolder", "does not exist"]),
    Case("leaderboard_out_empty", ["leaderboard", "runs", "-o", ""], fixture="runs", needles=["-o ''", "empty file name", ".md"]),
    Case("leaderboard_group_unknown", ["leaderboard", "runs", "--group", "nosuch"], fixture="runs", needles=["'nosuch'", "groups with records: fixture"]),
    Case("leaderboard_group_typo", ["leaderboard", "runs", "--group", "fixtur"], fixture="runs", needles=["did you mean 'fixture'"]),
    Case("leaderboard_corrupt_among_good", ["leaderboard", "runs", "-o", "lb.md"], rc=0, fixture="runs",
         files={"runs/fixture/copy/lstm/seed-0/result.json": "{not json"}, clean=False, needles=["skipped", "corrupt JSON", "seed-0/result.json"]),
    Case("leaderboard_only_corrupt", ["leaderboard", "r"], files=CORRUPT_ONLY, needles=["result.json", "corrupt"]),
    Case("leaderboard_csv_empty", ["leaderboard", "runs", "-o", "lb.md", "--csv", ""], fixture="runs", needles=["--csv"]),
    Case("leaderboard_record_in_wrong_folder", ["leaderboard", "runs", "-o", "lb.md"], rc=0, fixture="runs", clean=False,
         files={"runs/fixture/copy/lstm/seed-0/result.json": json.dumps(
             {**json.loads((FIXTURE_RUNS / "fixture/copy/lstm/seed-0/result.json").read_text()), "task": "repeat_copy"})},
         needles=["repeat_copy", "copy/lstm/seed-0"]),
    Case("leaderboard_same_dir_twice", ["leaderboard", "runs", "runs", "-o", "lb.md"], rc=0, fixture="runs", clean=False,
         needles=["duplicate of"]),
    # compare
    Case("compare_model_unknown", ["compare", "lstn", "--runs-dir", "runs", "--out", "plots"], fixture="runs",
         needles=["'lstn'", "models with runs: gru, lstm, rnn"]),
    Case("compare_model_typo", ["compare", "lstn", "--runs-dir", "runs", "--out", "plots"], fixture="runs", needles=["did you mean 'lstm'"]),
    Case("compare_task_unknown", ["compare", "lstm", "--runs-dir", "runs", "--task", "nosuch", "--out", "plots"], fixture="runs",
         needles=["'nosuch'", "tasks with runs"]),
    Case("compare_group_unknown", ["compare", "lstm", "--runs-dir", "runs", "--group", "nosuch", "--out", "plots"], fixture="runs",
         needles=["'nosuch'"]),
    Case("compare_runs_dir_missing", ["compare", "lstm", "--runs-dir", "nope", "--out", "plots"], needles=["nope", "no such runs folder"]),
    Case("compare_out_is_file", ["compare", "lstm", "--runs-dir", "runs", "--out", "afile"], fixture="runs", files={"afile": "x"},
         needles=["--out afile", "is a file, not a folder"]),
    Case("compare_out_empty", ["compare", "lstm", "--runs-dir", "runs", "--out", ""], fixture="runs", needles=["--out ''", "empty folder name"]),
    Case("compare_wandb_unknown", ["compare", "lstm", "--wandb", "bogus"], needles=["--wandb", "'bogus'"]),
    # bench
    Case("bench_what_unknown", ["bench", "nosuch"], needles=["'nosuch'", "'tasks'"]),
    Case("bench_batch_zero", ["bench", "tasks", "--batch-size", "0"], needles=["--batch-size", ">= 1"]),
    Case("bench_batch_negative", ["bench", "tasks", "--batch-size", "-1"], needles=["--batch-size", ">= 1"]),
    Case("bench_tasks_batch_huge", ["bench", "tasks", "--tasks", "copy", "--batch-size", "100000000"],
         needles=["--batch-size 100,000,000", "copy", "GiB", "smaller batch"]),
    Case("bench_models_batch_huge", ["bench", "models", "--models", "lstm", "--batch-size", "100000000"],
         needles=["--batch-size 100,000,000", "lstm", "GiB"]),
    Case("bench_task_typo", ["bench", "tasks", "--tasks", "cpy"], needles=["did you mean 'copy'"]),
    Case("bench_model_typo", ["bench", "models", "--models", "lstn"], needles=["did you mean 'lstm'"]),
    Case("bench_tasks_repeated", ["bench", "tasks", "--tasks", "copy", "copy", "--batch-size", "1"], rc=0,
         needles=["--tasks lists copy more than once"]),
    Case("bench_models_with_tasks_flag", ["bench", "models", "--tasks", "copy"], needles=["--tasks", "bench tasks"]),
    Case("bench_tasks_with_models_flag", ["bench", "tasks", "--models", "lstm"], needles=["--models", "bench models"]),
    Case("bench_tasks_with_device", ["bench", "tasks", "--device", "cuda"], needles=["--device cuda", "bench models"]),
    Case("bench_device_unknown", ["bench", "models", "--device", "tpu"], needles=["--device", "'tpu'"]),
    Case("bench_device_missing", ["bench", "models", "--device", "mps"], needles=["--device mps", "no MPS device", "--device cpu"]),
    Case("bench_threads_zero", ["bench", "tasks", "--threads", "0"], needles=["--threads", ">= 1"]),
    Case("bench_threads_huge", ["bench", "tasks", "--threads", "100000"], needles=["--threads", "[1, 1024]"]),
    Case("bench_json_suffix", ["bench", "tasks", "--json", "out.txt"], needles=["--json out.txt", ".json"]),
    Case("bench_json_folder", ["bench", "tasks", "--json", "."], needles=["--json", "is a folder"]),
    Case("bench_json_no_folder", ["bench", "tasks", "--json", "nofolder/x.json"], needles=["nofolder", "does not exist"]),
    Case("bench_json_empty", ["bench", "tasks", "--json", ""], needles=["--json ''", "empty file name", ".json"]),
    # capacity
    Case("capacity_model_no_reservoir", ["capacity", "--model", "lstm"], needles=["--model lstm", "no reservoir", "esn"]),
    Case("capacity_model_typo", ["capacity", "--model", "esm"], needles=["did you mean 'esn'"]),
    Case("capacity_sizes_zero", ["capacity", "--sizes", "0"], needles=["--sizes", ">= 1"]),
    Case("capacity_sizes_negative", ["capacity", "--sizes", "-5"], needles=["--sizes", ">= 1"]),
    Case("capacity_sizes_text", ["capacity", "--sizes", "abc"], needles=["--sizes", "'abc'"]),
    Case("capacity_sizes_huge", ["capacity", "--sizes", "1000000"], needles=["--sizes 1000000", "GiB"]),
    Case("capacity_seeds_negative", ["capacity", "--seeds", "-1"], needles=["--seeds", ">= 0"]),
    Case("capacity_seeds_repeated", ["capacity", "--sizes", "5", "--seeds", "0", "0"], rc=0, needles=["--seeds lists 0 more than once"]),
    Case("capacity_sizes_repeated", ["capacity", "--sizes", "5", "5", "--seeds", "0"], rc=0, needles=["--sizes lists 5 more than once"]),
    Case("capacity_range_zero", ["capacity", "--input-range", "0"], needles=["--input-range", "> 0"]),
    Case("capacity_range_negative", ["capacity", "--input-range", "-1"], needles=["--input-range", "> 0"]),
    Case("capacity_range_nan", ["capacity", "--input-range", "nan"], needles=["--input-range", "finite"]),
    Case("capacity_range_inf", ["capacity", "--input-range", "inf"], needles=["--input-range", "finite"]),
    Case("capacity_range_huge", ["capacity", "--input-range", "1e308"], needles=["--input-range", "float32"]),
    Case("capacity_scaling_nan", ["capacity", "--input-scaling", "nan"], needles=["--input-scaling", "finite"]),
    Case("capacity_scaling_huge", ["capacity", "--input-scaling", "1e39"], needles=["--input-scaling", "float32"]),
    Case("capacity_radius_zero", ["capacity", "--spectral-radius", "0"], needles=["--spectral-radius", "> 0"]),
    Case("capacity_radius_huge", ["capacity", "--spectral-radius", "1e39"], needles=["--spectral-radius", "float32"]),
    Case("capacity_threads_zero", ["capacity", "--threads", "0"], needles=["--threads", ">= 1"]),
    Case("capacity_json_suffix", ["capacity", "--json", "out.csv"], needles=["--json out.csv", ".json"]),
    Case("capacity_json_empty", ["capacity", "--json", ""], needles=["--json ''", "empty file name"]),
    # eval and inspect (a finished run's weights)
    Case("eval_no_run", ["eval", "nope"], needles=["nope", "no such run folder", "seed-<k>"]),
    Case("eval_not_a_run", ["eval", "runs/default/copy/lstm"], trained=True, needles=["not a run folder", "seed-<k>"]),
    Case("eval_length_zero", ["eval", RUN, "--length", "0"], trained=True, needles=["--length", ">= 1"]),
    Case("eval_length_text", ["eval", RUN, "--length", "abc"], trained=True, needles=["--length", "'abc'"]),
    Case("eval_length_huge", ["eval", RUN, "--length", "1000000000"], trained=True, needles=["evaluation length 1000000000", "GiB"]),
    Case("eval_size_zero", ["eval", RUN, "--size", "0"], trained=True, needles=["--size", ">= 1"]),
    Case("eval_size_huge", ["eval", RUN, "--size", "100000000"], trained=True, needles=["100000000 sequence(s)", "GiB"]),
    Case("eval_set_unknown", ["eval", RUN, "--set", "task.nosuch=1"], trained=True, needles=["'nosuch'", "allowed: bits"]),
    Case("eval_set_out_of_range", ["eval", RUN, "--set", "task.max_length=0"], trained=True, needles=["copy.max_length=0"]),
    Case("eval_set_width", ["eval", RUN, "--set", "task.bits=4"], trained=True, needles=["task.bits=4", "d_in=9", "keep the input and output widths"]),
    Case("eval_set_not_task", ["eval", RUN, "--set", "lr=0.1"], trained=True, needles=["'lr=0.1'", "task.<parameter>=value"]),
    Case("eval_device_missing", ["eval", RUN, "--device", "mps"], trained=True, needles=["--device mps", "no MPS device"]),
    Case("eval_run_is_file", ["eval", RUN + "/result.json"], trained=True, needles=["result.json", "not a folder"]),
    Case("eval_run_empty", ["eval", ""], needles=["''"]),
    Case("eval_lengths_repeated", ["eval", RUN, "--length", "5", "5"], trained=True, clean=False, rc=0, needles=["more than once"]),
    Case("eval_run_repeated", ["eval", RUN, RUN], trained=True, clean=False, rc=0, needles=["more than once"]),
    Case("inspect_png_suffix", ["inspect", RUN, "--png", "out.txt"], trained=True, needles=["--png out.txt", ".png"]),
    Case("inspect_png_empty", ["inspect", RUN, "--png", ""], trained=True, needles=["--png ''", "empty file name"]),
    Case("inspect_png_no_folder", ["inspect", RUN, "--png", "nofolder/x.png"], trained=True, needles=["nofolder", "does not exist"]),
    Case("inspect_length_zero", ["inspect", RUN, "--length", "0"], trained=True, needles=["--length", ">= 1"]),
    Case("inspect_length_huge", ["inspect", RUN, "--length", "1000000000"], trained=True, needles=["--length 1000000000", "GiB"]),
    Case("inspect_seed_negative", ["inspect", RUN, "--seed", "-1"], trained=True, needles=["--seed", ">= 0"]),
    Case("inspect_set_width", ["inspect", RUN, "--set", "task.bits=4"], trained=True, needles=["task.bits=4", "keep the input and output widths"]),
    Case("inspect_set_unknown", ["inspect", RUN, "--set", "task.nosuch=1"], trained=True, needles=["'nosuch'"]),
    Case("inspect_not_a_run", ["inspect", "runs/default/copy"], trained=True, needles=["not a run folder"]),
    Case("compare_format_unknown", ["compare", "lstm", "--format", "bmp"], needles=["--format", "'bmp'"]),
]


# --- the batch driver ----------------------------------------------------------------------------

DRIVER = r'''
import contextlib, io, json, logging, os, shutil, sys, traceback
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")
jobs = json.load(open(sys.argv[1]))
out = open(sys.argv[2], "w")
root, fixture_runs = sys.argv[3], sys.argv[4]
from memtasks.cli import main
from memtasks.models import MODELS
from memtasks.tasks import TASKS

TRAIN = ["train", "--task", "copy", "--model", "lstm", "--sequences", "16", "--batch-size", "8", "--set", "eval_every=16",
         "--set", "eval_size=4", "--set", "task.max_length=3", "--set", "task.generalise=5", "--quiet", "--runs-dir", "runs"]
trained = os.path.join(root, "_trained")
if any(job["trained"] for job in jobs):  # one finished run, copied into every case that reads one
    os.makedirs(trained)
    os.chdir(trained)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(TRAIN) == 0
    os.chdir(root)

def listing(d):
    found = set()
    for base, dirs, files in os.walk(d):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(base, name), d))
    return found

for job in jobs:
    d = os.path.join(root, job["id"])
    os.makedirs(d)
    if job["fixture"]:
        shutil.copytree(fixture_runs, os.path.join(d, job["fixture"]))
    if job["trained"]:
        shutil.copytree(os.path.join(trained, "runs"), os.path.join(d, "runs"))
    for rel, content in job["files"].items():
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p) or d, exist_ok=True)
        if isinstance(content, dict) and content.get("dir"):
            os.makedirs(p, exist_ok=True)
        elif isinstance(content, dict):
            open(p, "wb").write(bytes.fromhex(content["hex"]))
        else:
            open(p, "w").write(content)
    before = listing(d)
    registries = (dict(TASKS._entries), dict(MODELS._entries))
    root_logger = logging.getLogger()
    for h in list(root_logger.handlers):
        root_logger.removeHandler(h)
    o, e = io.StringIO(), io.StringIO()
    os.chdir(d)
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = main(job["argv"])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            rc = "uncaught"
    os.chdir(root)
    for reg, saved in zip((TASKS, MODELS), registries):
        reg._entries.clear()
        reg._entries.update(saved)
    out.write(json.dumps({"id": job["id"], "rc": rc, "stdout": o.getvalue()[-6000:], "stderr": e.getvalue()[-6000:],
                          "new": sorted(listing(d) - before)}) + "\n")
    out.flush()
'''


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["WANDB_MODE"] = "disabled"
    env["WANDB_SILENT"] = "true"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("adversarial")
    jobs, results = root / "jobs.json", root / "results.jsonl"
    jobs.write_text(json.dumps([c.job() for c in CASES]))
    cases_dir = root / "cases"
    cases_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(jobs), str(results), str(cases_dir), str(FIXTURE_RUNS)],
        capture_output=True, text=True, env=_env(), cwd=root, timeout=900,
    )
    got = {}
    if results.exists():
        for line in results.read_text().splitlines():
            row = json.loads(line)
            got[row["id"]] = row
    return {"results": got, "driver": proc}


def test_case_ids_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def _params() -> list[Any]:
    return [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
        for c in CASES
    ]


@pytest.mark.parametrize("case", _params())
def test_case(case: Case, batch: dict[str, Any]) -> None:
    row = batch["results"].get(case.id)
    if row is None:
        driver = batch["driver"]
        pytest.fail(f"the batch driver gave no result for {case.id} (rc {driver.returncode}): {driver.stderr[-3000:]}")
    err, rc = row["stderr"], row["rc"]
    shown = f"memtasks {' '.join(case.argv)}\n--- rc {rc}\n--- stderr:\n{err}\n--- stdout:\n{row['stdout'][-1500:]}"
    assert "Traceback" not in err, shown
    assert "internal error" not in err, shown
    expected = case.rc if isinstance(case.rc, tuple) else (case.rc,)
    assert rc in expected, shown
    if rc == 2:  # the error is the last line, in memtasks' format, and says what was wrong
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert last.startswith("memtasks: error: "), shown
        assert len(err.strip().splitlines()) <= 2, shown  # one line (a warning before it at most)
    for needle in case.needles:
        assert needle in err, f"{needle!r} missing\n{shown}"
    for needle in case.stdout_needles:
        assert needle in row["stdout"], f"{needle!r} missing from stdout\n{shown}"
    for path in case.new_files:
        assert path in row["new"], f"{path} was not written; new: {row['new']}\n{shown}"
    if case.clean:
        assert row["new"] == [], f"left behind: {row['new']}\n{shown}"


# --- through the real entry point ----------------------------------------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memtasks.cli", *args], capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=120)


def test_entry_point_error_is_one_line(tmp_path: Path) -> None:
    proc = _cli("show", "cpy", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("memtasks: error: unknown task 'cpy'; did you mean 'copy'?")
    assert list(tmp_path.iterdir()) == []


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    for argv in (["-v", "show", "nosuch"], ["show", "nosuch", "-v"]):
        proc = _cli(*argv, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" in proc.stderr and "RegistryError" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("memtasks: error: unknown task 'nosuch'")


def test_entry_point_plugin_error(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text("def broken(:\n")
    proc = _cli("models", "--plugin", "p.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "p.py: line 1: SyntaxError" in proc.stderr
