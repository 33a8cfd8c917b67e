"""``python tests/distribute/launch.py OVERRIDES...``: run.py in this process, after splitting the
CPU into ``TRAINKIT_LOGICAL_CPUS`` logical devices (``/cpu:0``, ``/cpu:1`` ...) so that
``trainer.strategy=mirrored`` has several devices on a machine without GPUs.

Logical devices can only be set before TensorFlow initialises its runtime, once per process:
the tests start this script in a subprocess so the split never leaks into other tests.
"""

import os
import runpy
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
count = int(os.environ.get("TRAINKIT_LOGICAL_CPUS") or 0)
if count:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )

RUN = Path(__file__).resolve().parents[2] / "run.py"
sys.argv = [str(RUN), *sys.argv[1:]]
runpy.run_path(str(RUN), run_name="__main__")
