"""What Hydra (or the job) says about a multirun: the sweep directory and the job's number."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainkit.context import RunContext


@dataclass(frozen=True)
class SweepInfo:
    sweep_dir: str  # absolute: it names the sweep's parent run in every job process
    job_num: int | None = None
    overrides: str | None = None


def detect_sweep(context: RunContext | None) -> SweepInfo | None:
    """``ctx.sweep`` (``sweep_dir``, ``job_num``, ``overrides``) if the job set it, else Hydra's
    own state."""
    sweep = context.sweep if context is not None else None
    if sweep and sweep.get("sweep_dir"):
        return SweepInfo(
            str(Path(sweep["sweep_dir"]).resolve()), sweep.get("job_num"), sweep.get("overrides")
        )
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(hydra.sweep.dir)
    if not sweep_dir.is_absolute():
        sweep_dir = Path(hydra.runtime.cwd) / sweep_dir
    return SweepInfo(str(sweep_dir.resolve()), hydra.job.num, hydra.job.override_dirname or None)


def git_commit(start: Path | None = None) -> tuple[str, bool] | None:
    """(commit, dirty) of the git checkout holding ``start`` (default: the cwd), if any."""
    import subprocess

    cwd = str(start or Path.cwd())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip(), bool(status.stdout.strip())
