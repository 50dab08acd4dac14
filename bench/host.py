"""The machine a benchmark ran on, and the server process's CPU time and memory.

``machine()`` names what the figures depend on: the CPU model and the flags CTranslate2's int8
kernels use (avx2, avx512f, avx512_vnni), cores and threads, memory, and the server's model,
device, compute type and ASR threads as its settings resolve them. ``ProcWatch`` samples
``/proc/<pid>/stat`` (user + system time, all threads) and ``/proc/<pid>/status`` (VmRSS) of
the server process while a replay runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ("avx2", "avx512f", "avx512_vnni")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpuinfo() -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        blocks.append(entry)
    return blocks


def machine(server_env: Mapping[str, str]) -> dict[str, Any]:
    """The machine, and the ASR configuration ``server_env`` gives ``cuecard serve``."""
    from models.whisper import DEFAULT_COMPUTE_TYPE
    from server.settings import Settings

    cpus = _cpuinfo()
    first = cpus[0] if cpus else {}
    flags = set(first.get("flags", "").split())
    cores = {(c.get("physical id", "0"), c.get("core id", str(i))) for i, c in enumerate(cpus)}
    settings = Settings.from_env(dict(server_env))
    mem_kb = _field_kb(Path("/proc/meminfo"), "MemTotal")
    return {
        "cpu_model": first.get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "flags": {f: f in flags for f in FLAGS},
        "physical_cores": len(cores) or os.cpu_count() or 0,
        "threads": os.cpu_count() or 0,
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "model": settings.model,
        "device": settings.device,
        # "" means the device's default, which is what the server loads
        "compute_type": settings.compute_type or DEFAULT_COMPUTE_TYPE[settings.device],
        "asr_threads": settings.asr_threads,
        "asr_workers": settings.resolved_asr_workers,
        # CTranslate2's kernels forced to an older ISA (AVX2: an emulated AVX2-only CPU); ""
        "ct2_force_cpu_isa": server_env.get("CT2_FORCE_CPU_ISA", ""),
    }


def _field_kb(path: Path, name: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise ValueError(f"{path} has no {name}")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (every thread) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    return _field_kb(Path(f"/proc/{pid}/status"), "VmRSS") / 1024


@dataclass(slots=True)
class ProcWatch:
    """CPU time and RSS of one process, sampled every ``every_s`` while ``watching()``."""

    pid: int
    every_s: float = 0.5
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (t, cpu s, MB)

    def sample(self) -> None:
        self.samples.append((time.monotonic(), proc_cpu_s(self.pid), proc_rss_mb(self.pid)))

    @contextlib.asynccontextmanager
    async def watching(self) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.every_s)
                self.sample()

        self.sample()
        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.sample()

    def figures(self, audio_s: float) -> dict[str, float]:
        """CPU share of one core over the watch, CPU seconds per audio second, RSS."""
        (t0, c0, _), (t1, c1, _) = self.samples[0], self.samples[-1]
        rss = [m for _, _, m in self.samples]
        return {
            "cpu_cores": round((c1 - c0) / max(t1 - t0, 1e-9), 3),
            "cpu_per_audio_s": round((c1 - c0) / audio_s, 3),
            "rss_peak_mb": round(max(rss), 1),
            "rss_mean_mb": round(sum(rss) / len(rss), 1),
        }
