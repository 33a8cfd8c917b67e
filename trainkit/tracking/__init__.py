"""Shared machinery of the MLflow and TensorBoard callbacks.

``flatten``   config -> dotted params, with MLflow's limits; the secret rules every writer uses.
``spool``     the local JSONL file that keeps what the store could not take.
``files``     the names of the files that tie a run directory to its MLflow runs.
``store``     one MLflow run: create, resume, parent run of a sweep, reachability, end.
``writer``    the background thread that moves buffered points to the store (or the spool).
``summary``   the model summary as a plain table at its full width.
``plots``     PNG figures (training curves, learning rate, confusion matrix).
``evaluation`` test-split predictions shared by the callbacks (confusion matrix).
``sweep``     what Hydra says about a multirun.
``replay``    ``python -m trainkit.tracking.replay RUN_DIR``: write a spool left by a job.
"""
