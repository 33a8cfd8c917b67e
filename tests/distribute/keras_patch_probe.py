"""One worker of a two-worker MultiWorkerMirroredStrategy fit of a tiny Keras model.

``python keras_patch_probe.py INDEX PORT0,PORT1 patched|unpatched``: prints ``weights: <sum>``
after ``fit``, ``evaluate`` and ``predict``, or fails the way keras-team/keras#20585 describes.
The test starts two of these, with and without
:func:`trainkit.distribute.patch_keras_for_multi_worker`.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
index, ports, mode = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
workers = [f"127.0.0.1:{port}" for port in ports]
config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
os.environ["TF_CONFIG"] = json.dumps(config)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainkit import distribute  # noqa: E402

distribute.wait_for_peers(workers[index], [w for w in workers if w != workers[index]], 60)
strategy = tf.distribute.MultiWorkerMirroredStrategy()
if mode == "patched":
    distribute.patch_keras_for_multi_worker()
keras.utils.set_random_seed(0)
with strategy.scope():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
y = np.arange(64) % 3
data = distribute.shard(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
model.fit(data, epochs=2, verbose=0)
model.evaluate(data, verbose=0)
assert model.predict(x[:10], verbose=0).shape == (10, 3)
print("weights:", repr(float(sum(np.abs(w).sum() for w in model.get_weights()))), flush=True)
