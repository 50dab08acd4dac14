"""The GPU path is asked for, never guessed: CUECARD_DEVICE is checked at start-up, a missing
GPU fails with the reason, and ``python -m bench.gpu`` has a CPU dry run and a clear refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import ctranslate2
import pytest

from bench import gpu
from models.errors import ModelUnavailable
from models.registry import load_transcriber
from server.engines import scheduler_options
from server.settings import Settings, SettingsError

NO_GPU = ctranslate2.get_cuda_device_count() == 0


def test_device_and_compute_type_are_checked_at_start_up() -> None:
    assert Settings.from_env({}).device == "cpu"
    assert Settings.from_env({"CUECARD_DEVICE": "cuda"}).device == "cuda"
    with pytest.raises(SettingsError, match="CUECARD_DEVICE"):
        Settings.from_env({"CUECARD_DEVICE": "gpu"})
    with pytest.raises(SettingsError, match="CUECARD_COMPUTE_TYPE"):
        Settings.from_env({"CUECARD_COMPUTE_TYPE": "int4"})


def test_a_gpu_batches_more_than_a_cpu() -> None:
    cpu, cuda = scheduler_options(Settings()), scheduler_options(Settings(device="cuda"))
    assert cuda.max_batch > cpu.max_batch and cuda.max_partial_batch > cpu.max_partial_batch


def test_a_cpu_gets_a_whisper_worker_a_core_and_a_gpu_one_batching_worker() -> None:
    """One 1-thread worker per core (at most 4) by default on the CPU; CUECARD_ASR_WORKERS
    and CUECARD_ASR_THREADS override it; the scheduler runs as many as the transcriber has."""
    cores = os.cpu_count() or 1
    assert Settings().resolved_asr_workers == max(1, min(4, cores))
    assert Settings(asr_threads=2).resolved_asr_workers == max(1, min(4, cores // 2))
    assert Settings(asr_workers=3).resolved_asr_workers == 3
    assert Settings(device="cuda").resolved_asr_workers == 1
    assert scheduler_options(Settings(asr_workers=3)).workers == 3
    assert Settings.from_env({"CUECARD_ASR_WORKERS": "2"}).asr_workers == 2
    with pytest.raises(SettingsError, match="CUECARD_ASR_WORKERS"):
        Settings.from_env({"CUECARD_ASR_WORKERS": "-1"})


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_fails_with_the_reason() -> None:
    with pytest.raises(ModelUnavailable, match="no CUDA device"):
        load_transcriber("tiny.en", threads=1, device="cuda")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA device")
def test_the_gpu_check_refuses_at_once_without_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--device cpu" in err


@pytest.mark.model
def test_the_gpu_check_dry_run_on_cpu_reports_measured_levels(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    args = ["--device", "cpu", "--calls", "1", "--turns", "4", "--target-p95", "60"]
    assert gpu.main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["compute_type"] == "int8"
    (level,) = report["levels"]
    assert level["calls"] == 1 and level["finals"] >= 1
    assert report["streams_held"] == 1  # a 60 s target holds one call
    figures = [level["final_p50_s"], level["final_p95_s"], level["asr_busy_share"]]
    figures += [b["p95"] for b in level["by_length"].values()]
    assert level["by_length"] and all(isinstance(x, float) and x == x for x in figures)
    assert level["batches"] >= level["finals"]


def test_long_turn_commits_are_off_unless_asked_for() -> None:
    """Commits cost WER on real speech, so the server decodes whole utterances by default;
    CUECARD_LONG_TURN_COMMIT_S turns them on from that much undecoded audio."""
    from server.engines import asr_options
    from server.settings import Settings

    assert not asr_options(Settings.from_env({})).commit.enabled
    on = asr_options(Settings.from_env({"CUECARD_LONG_TURN_COMMIT_S": "6"})).commit
    assert on.enabled and on.after_s == 6.0
