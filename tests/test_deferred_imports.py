"""Keras's unused imports wait for their first use, and still work when it comes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A fresh interpreter: this worker's own imports depend on the tests it ran before.
PROBE = """
import json, sys
from trainkit.deferred_imports import is_loaded
from trainkit.runtime import quiet_tensorflow

quiet_tensorflow()
import keras
import tensorflow as tf

NAMES = ("sklearn", "matplotlib.pyplot", "keras.wrappers")
after_import = {name: is_loaded(name) for name in NAMES}


def double(x):
    if x > 1:  # autograph converts this function, reading every loaded module's __file__
        return x * 2
    return x


assert [int(v) for v in tf.data.Dataset.range(3).map(double)] == [0, 1, 4]
after_autograph = {name: is_loaded(name) for name in NAMES}
import matplotlib.pyplot as plt

figure = plt.figure(figsize=(1, 1))
plt.close(figure)
uses = {
    "keras.wrappers": keras.wrappers.SKLearnClassifier.__module__,
    "tf.keras.wrappers": tf.keras.wrappers.SKLearnRegressor.__name__,
    "gallery": keras.visualization.plot_image_gallery.__name__,
    "figure": type(figure).__name__,
}
after_use = {name: is_loaded(name) for name in NAMES}
print(json.dumps({"after_import": after_import, "after_autograph": after_autograph,
                  "uses": uses, "after_use": after_use}))
"""


def test_keras_import_defers_sklearn_and_pyplot_until_they_are_used(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"  # a file: autograph reads the source of what it converts
    probe.write_text(PROBE, encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, str(probe)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["after_import"] == {
        "sklearn": False,
        "matplotlib.pyplot": False,
        "keras.wrappers": False,
    }
    assert seen["after_autograph"] == seen["after_import"]
    assert seen["uses"] == {
        "keras.wrappers": "keras.src.wrappers.sklearn_wrapper",
        "tf.keras.wrappers": "SKLearnRegressor",
        "gallery": "plot_image_gallery",
        "figure": "Figure",
    }
    assert seen["after_use"] == {"sklearn": True, "matplotlib.pyplot": True, "keras.wrappers": True}
