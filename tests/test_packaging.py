"""How memtasks is packaged: the model folder installs as ``memtasks.models`` (never a top-level
``models``), and dependencies point one way: models know torch and the core, nothing else."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_models_import_no_task_metric_training_or_matrix_module():
    loaded = _loaded_after("import memtasks.models as m; m.build_model('dnc', 3, 2)")
    ours = {name for name in loaded if name.startswith("memtasks")}
    assert "memtasks.models.dnc" in ours
    forbidden = ("memtasks.tasks", "memtasks.metrics", "memtasks.train", "memtasks.matrix", "memtasks.results",
                 "memtasks.leaderboard", "memtasks.compare", "memtasks.cli")
    wrong = sorted(name for name in ours if name.startswith(forbidden))
    assert not wrong, f"importing memtasks.models pulled in {wrong}"
    assert "models" not in loaded  # no top-level package of that name


def test_tasks_import_no_model():
    loaded = _loaded_after("import memtasks.tasks")
    assert not any(name.startswith(("memtasks.models", "memtasks.train", "memtasks.matrix")) for name in loaded)


def test_package_list_matches_the_tree():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    found = set()
    for top, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([top, *rel.parts])
            # a sub-folder mapped elsewhere is listed under its own mapping
            if not any(name != top and name.startswith(other) for other in mapping if other != top and other.startswith(top)):
                found.add(name)
    assert set(config["packages"]) == found


@pytest.mark.slow
def test_wheel_installs_memtasks_models_and_no_top_level_models(tmp_path):
    pytest.importorskip("setuptools")
    import shutil

    src = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for name in ("memtasks", "models"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("memtasks-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "models" not in tops
    assert {t for t in tops if not t.endswith(".dist-info")} == {"memtasks"}
    assert "memtasks/models/__init__.py" in names and "memtasks/models/dnc/model.py" in names
    assert "memtasks/presets/reference.toml" in names
    assert {"memtasks/models/dnc/kernel.c", "memtasks/models/ntm/kernel.c", "memtasks/models/cbuild_helpers.h"} <= set(names)
