"""Names of the files that tie a run directory to its MLflow runs.

A module of its own, without MLflow's import (2 s): the job and the backup read these files in
processes that may never open the store.
"""

RUN_ID_FILE = "mlflow_run_id"  # <run_dir>/mlflow_run_id: the job's run, resumed by a rerun
PARENT_RUN_ID_FILE = "mlflow_parent_run_id"  # <sweep_dir>/...: the sweep's parent run
