"""trainkit's command line: ``python run.py model=alexnet callbacks=full``.

Hydra composes ``conf/config.yaml`` with the overrides; :func:`trainkit.job.main` does the work.
TensorFlow's start-up messages are hidden (``TRAINKIT_TF_LOGS=1`` shows them).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    # The job checks the config before it imports TensorFlow (quietly): a bad input ends in
    # about a second, not after TensorFlow's five.
    from trainkit.job import main as run_job

    return run_job(cfg)


if __name__ == "__main__":
    # Config errors (an unknown option, a bad override, a wrong type) as one line, exit 2.
    import sys
    from pathlib import Path

    from trainkit.config.callbacks import exit_on_callback_override_error
    from trainkit.config.hydra_mode import compose_once
    from trainkit.errors import run_reporting_errors

    compose_once(Path(__file__).resolve().parent / "conf")  # not twice (hydra#3440)

    # A misspelt callback option, or one of a callback the stack lacks: its own one line.
    exit_on_callback_override_error(sys.argv[1:])
    run_reporting_errors(main)
