"""Adding a model without touching memtasks: a local plugin file, and an installed package
that declares an entry point in the ``memtasks.models`` group."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_model.py"

TOY = '''
from dataclasses import dataclass
import torch
from torch import nn
from memtasks.models import MemoryModel, register_model

@dataclass(frozen=True)
class ToyConfig:
    hidden_size: int = 8

@register_model("toy_rnn", config=ToyConfig)
class ToyRNN(MemoryModel):
    def __init__(self, d_in, d_out, config):
        super().__init__(d_in, d_out, config)
        self.rnn = nn.RNN(d_in, config.hidden_size, batch_first=True)
        self.out = nn.Linear(config.hidden_size, d_out)

    def initial_state(self, batch_size, device=None):
        return torch.zeros(batch_size, self.config.hidden_size, device=device)

    def forward(self, x, state=None):
        self.check_input(x)
        h0 = self.initial_state(x.shape[0], x.device) if state is None else state
        y, h = self.rnn(x, h0.unsqueeze(0).contiguous())
        return self.out(y), h[0]
'''


def run(*args: str, env_extra: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_local_plugin_file_trains_from_the_cli(tmp_path):
    out = run("-m", "memtasks.cli", "train", "--task", "copy", "--model", "mgu", "--plugin", str(EXAMPLE),
              "--sequences", "256", "--set", "task.max_length=3", "--set", "eval_every=128",
              "--runs-dir", str(tmp_path), "--quiet")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "default" / "copy" / "mgu" / "seed-0" / "result.json").exists()
    assert "status=ok" in out.stdout


def test_plugin_by_module_path(tmp_path):
    (tmp_path / "my_plugin_mod.py").write_text(TOY)
    out = run("-c", "import sys; from memtasks.core.registry import load_plugin; load_plugin('my_plugin_mod');"
              "import memtasks.models as models; print(models.list_models())", env_extra={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "toy_rnn" in out.stdout


def test_missing_plugin_file_is_a_clear_error(tmp_path):
    out = run("-m", "memtasks.cli", "train", "--task", "copy", "--model", "mgu", "--plugin", str(tmp_path / "nope.py"))
    assert out.returncode == 2 and "does not exist" in out.stderr


def _wheel(tmp_path: Path) -> Path:
    """Build a real wheel of a throw-away package declaring a ``memtasks.models`` entry point."""
    name, version = "toy_memtasks_plugin", "0.1.0"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": TOY,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: memtasks-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[memtasks.models]\ntoy_rnn = {name}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = tmp_path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def test_installed_entry_point_package(tmp_path):
    wheel = _wheel(tmp_path)
    target = tmp_path / "site"
    pip = run("-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    assert pip.returncode == 0, pip.stderr
    env = {"PYTHONPATH": str(target)}
    listed = run("-c", "import memtasks.models as models; print(models.list_models())", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    assert "toy_rnn" in listed.stdout
    zoo = run("-m", "memtasks.cli", "models", env_extra=env)  # an entry point's model is imported, then listed
    assert zoo.returncode == 0 and "| toy_rnn " in zoo.stdout, zoo.stderr
    trained = run("-m", "memtasks.cli", "train", "--task", "copy", "--model", "toy_rnn", "--sequences", "128",
                  "--set", "task.max_length=2", "--runs-dir", str(tmp_path / "runs"), "--quiet", env_extra=env)
    assert trained.returncode == 0, trained.stderr
