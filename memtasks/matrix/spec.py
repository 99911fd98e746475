"""The matrix spec: a small TOML file, or a built-in preset (``demo``, ``smoke``, ``reference``, ``paper``).

Example::

    name = "mine"                 # shown in the leaderboard header
    group = "mine"                # runs/<group>/...; --group overrides
    seeds = [0, 1, 2]

    [train]                       # RunConfig fields for every cell
    sequences = 50_000
    eval_every = 5_000
    param_budget = 60_000         # size every model to ~60k trainable parameters

    [tasks.copy]                  # a task and its parameter overrides
    max_length = 10
    [tasks.copy.train]            # RunConfig fields for this task's cells only
    sequences = 100_000

    [models.lstm]                 # a model and its hyper-parameters
    [models.ntm]
    memory_slots = 64
    [models.ntm.train]            # RunConfig fields for this model's cells only
    lr = 3e-4

Precedence for a cell's RunConfig: ``[train]`` < ``[tasks.T.train]`` < ``[models.M.train]`` <
``--set``. A model's hyper-parameters and ``param_budget`` cannot both name its size knob.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from memtasks.core.config import ConfigError, check_int, unknown_key_message
from memtasks.core.registry import RegistryError
from memtasks.matrix.tune import TuneSpec, parse_tune
from memtasks.train.config import RunConfig

log = logging.getLogger(__name__)

PRESETS = ("demo", "smoke", "reference", "paper")
_TOP_KEYS = ("name", "group", "seeds", "description", "train", "tasks", "models", "tune")
_CELL_FIXED = ("task", "model", "seed", "task_params", "model_params")


class SpecError(ConfigError):
    """A matrix spec is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class MatrixSpec:
    name: str
    group: str
    seeds: tuple[int, ...]
    train: Mapping[str, Any] = field(default_factory=dict)
    tasks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # task -> {params..., "train": {...}}
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # model -> {hparams..., "train": {...}}
    description: str = ""
    source: str = ""
    tune: TuneSpec | None = None  # the equal-tuning phase (memtasks.matrix.tune), if any

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        return d


def load_spec(name_or_path: str) -> MatrixSpec:
    """Load a preset by name or a TOML file by path; every problem raises ``SpecError``."""
    if name_or_path in PRESETS:
        text = resources.files("memtasks").joinpath(f"presets/{name_or_path}.toml").read_text()
        source = f"preset {name_or_path!r}"
    else:
        path = Path(name_or_path)
        if not name_or_path.strip():
            raise SpecError(f"'': empty; give a preset ({', '.join(PRESETS)}) or a TOML spec file")
        if path.is_dir():
            raise SpecError(f"{name_or_path}: is a folder; give a TOML spec file or a preset ({', '.join(PRESETS)})")
        if not path.is_file():
            close = difflib.get_close_matches(name_or_path, PRESETS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a TOML file{hint}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"{path}: not a text file ({exc.reason} at byte {exc.start}); a spec is a UTF-8 TOML file") from None
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: invalid TOML ({exc})") from None
    return parse_spec(data, source, default_name=Path(name_or_path).stem)


def parse_spec(data: Mapping[str, Any], source: str = "spec", default_name: str = "matrix") -> MatrixSpec:
    for key in data:
        if key not in _TOP_KEYS:
            raise SpecError(f"{source}: {unknown_key_message(key, list(_TOP_KEYS), 'top-level')}")
    name = data.get("name", default_name)
    group = data.get("group", name)
    for key, value in (("name", name), ("group", group)):
        if not isinstance(value, str) or not value:
            raise SpecError(f"{source}: {key} must be a non-empty string, got {value!r}")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise SpecError(f"{source}: seeds must be a non-empty list of integers, got {seeds!r}")
    for s in seeds:
        try:
            check_int("seeds", "seed", s, 0)
        except ValueError as exc:
            raise SpecError(f"{source}: {exc}") from None
    seeds = _unique("seeds", seeds, source)
    train = _table(data.get("train", {}), source, "train")
    tasks = {k: _table(v, source, f"tasks.{k}") for k, v in _table(data.get("tasks", {}), source, "tasks").items()}
    models = {k: _table(v, source, f"models.{k}") for k, v in _table(data.get("models", {}), source, "models").items()}
    if not tasks:
        raise SpecError(f"{source}: [tasks] is empty; name at least one task")
    if not models:
        raise SpecError(f"{source}: [models] is empty; name at least one model")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{source}: description must be a string, got {description!r}")
    for kind, tables in (("tasks", tasks), ("models", models)):
        for key, table in tables.items():
            if "train" in table:
                _table(table["train"], source, f"{kind}.{key}.train")
    try:
        tune = parse_tune(data.get("tune"), source)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    for model in (tune.models if tune else {}):
        if model not in models:
            raise SpecError(f"{source}: [tune.models.{model}] names a model this matrix does not train")
    spec = MatrixSpec(name, group, tuple(seeds), train, tasks, models, description, source, tune)
    expand(spec)  # validates every cell now, so errors surface before anything runs
    return spec


def _table(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{source}: [{where}] must be a table, got {type(value).__name__}")
    return dict(value)


def _run_fields(values: Mapping[str, Any], source: str, where: str) -> dict[str, Any]:
    allowed = [f.name for f in dataclasses.fields(RunConfig) if f.name not in _CELL_FIXED]
    for key in values:
        if key not in allowed:
            raise SpecError(f"{source}: [{where}] {unknown_key_message(key, allowed, 'run setting')}")
    return dict(values)


def expand(
    spec: MatrixSpec,
    tasks: list[str] | None = None,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    sets: list[str] | None = None,
    group: str | None = None,
) -> list[RunConfig]:
    """The spec's cells as RunConfigs, in a stable order (task, model, seed), narrowed by the filters."""
    from memtasks.tasks import TASKS
    from memtasks.models import MODELS

    for name in tasks or ():
        if name not in spec.tasks:
            raise SpecError(f"{spec.source}: {unknown_key_message(name, list(spec.tasks), 'task')} (not in this matrix)")
    extra = [m for m in models or () if m not in spec.models]
    if extra:
        # A registered model the spec does not name (a user's plugin) runs with the spec's
        # settings and default hyper-parameters, so it lands in the same tables as the baselines.
        for name in extra:
            try:
                MODELS.get(name)
            except RegistryError as exc:
                raise SpecError(f"{spec.source}: --models {exc}") from None
        spec = dataclasses.replace(spec, models={**spec.models, **{m: {} for m in extra}})
    base = _run_fields(spec.train, spec.source, "train")
    _check_sets(sets or [], spec.source)
    cells = []
    seed_list = _unique("--seeds" if seeds is not None else "seeds", seeds if seeds is not None else spec.seeds, spec.source)
    tasks = _unique("--tasks", tasks, spec.source) if tasks else tasks
    models = _unique("--models", models, spec.source) if models else models
    for task_name, task_table in spec.tasks.items():
        if tasks and task_name not in tasks:
            continue
        try:
            TASKS.get(task_name)
        except RegistryError as exc:
            raise SpecError(f"{spec.source}: [tasks.{task_name}] {exc}") from None
        task_params = {k: v for k, v in task_table.items() if k != "train"}
        task_train = _run_fields(task_table.get("train", {}), spec.source, f"tasks.{task_name}.train")
        for model_name, model_table in spec.models.items():
            if models and model_name not in models:
                continue
            try:
                MODELS.get(model_name)
            except RegistryError as exc:
                raise SpecError(f"{spec.source}: [models.{model_name}] {exc}") from None
            hparams = {k: v for k, v in model_table.items() if k != "train"}
            model_train = _run_fields(model_table.get("train", {}), spec.source, f"models.{model_name}.train")
            for i, seed in enumerate(seed_list):
                fields = {**base, **task_train, **model_train}
                if group is not None:
                    fields["group"] = group
                fields.setdefault("group", spec.group)
                try:
                    cfg = RunConfig(
                        task=task_name, model=model_name, seed=seed, task_params=task_params, model_params=hparams, **fields
                    )
                    cfg = cfg.with_sets(sets or [])
                    _check_cell(cfg, sizes=i == 0)  # a cell's sizes do not depend on its seed
                except (TypeError, ValueError) as exc:
                    raise SpecError(f"{spec.source}: cell {task_name} x {model_name}: {exc}") from None
                cells.append(cfg)
    return cells


def _unique(what: str, values: Any, source: str) -> list[Any]:
    """``values`` in order with repeats dropped (a cell is trained once), with a warning naming them."""
    out = list(dict.fromkeys(values))
    if len(out) != len(values):
        repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
        log.warning("%s: %s lists %s more than once; each cell runs once", source, what, ", ".join(map(str, repeated)))
    return out


_SET_BY_MATRIX = {"task": "--tasks", "model": "--models", "seed": "--seeds", "group": "--group"}


def _check_sets(sets: list[str], source: str) -> None:
    """``--set`` may not change what identifies a cell: two cells would become one run."""
    for item in sets:
        key = item.split("=", 1)[0].strip()
        if key in _SET_BY_MATRIX:
            raise SpecError(
                f"{source}: --set {item}: the matrix gives every cell its own {key}; "
                f"choose them with {_SET_BY_MATRIX[key]} instead"
            )


def _check_cell(cfg: RunConfig, sizes: bool = True) -> None:
    """Build the task and check the model's config so a bad value fails before the matrix starts."""
    from memtasks.tasks import get_task
    from memtasks.models import MODELS, model_config

    task = get_task(cfg.task, **cfg.task_params)
    model_config(cfg.model, **cfg.model_params)
    knob = MODELS.get(cfg.model).size_knob
    if cfg.param_budget is not None and knob in cfg.model_params:
        raise ConfigError(f"param_budget and {knob} both set for {cfg.model}; give one")
    if sizes:
        _check_sizes(cfg, task)


_SIZES_CHECKED: set[str] = set()


def _check_sizes(cfg: RunConfig, task: Any) -> None:
    """Refuse now what a cell's run would refuse when it starts: a parameter budget the model
    cannot meet, a model or a batch too large for this machine's memory. The model is built on the
    meta device, which allocates nothing; a closed-form model (it draws its reservoir on the CPU)
    or one that cannot be built there is sized when its run starts (the trainer checks the same
    again)."""
    import json

    import torch

    from memtasks.core.errors import MemtasksError
    from memtasks.models import MODELS
    from memtasks.tasks.limits import check_run_sizes
    from memtasks.train.build import make_model

    key = json.dumps([cfg.task, cfg.task_params, cfg.model, cfg.model_params, cfg.param_budget, cfg.batch_size,
                      cfg.eval_size], sort_keys=True, default=str)
    if key in _SIZES_CHECKED:  # the spec is expanded again when the matrix is planned
        return
    try:
        if MODELS.get(cfg.model).closed_form:
            raise NotImplementedError("closed form")
        with torch.device("meta"):
            state = make_model(cfg, task).state_size()  # build_model refuses a model too large to train
    except MemtasksError:
        raise
    except Exception:  # noqa: BLE001 -- e.g. a model that copies data while it is built
        log.debug("%s cannot be built on the meta device; its sizes are checked when its runs start", cfg.model)
        state = 0
    check_run_sizes(task, cfg.batch_size, cfg.eval_size, state)
    _SIZES_CHECKED.add(key)
