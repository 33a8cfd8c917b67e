"""A user's callback that lives outside trainkit (this folder is not a package on the path).

The CLI test adds it with ``+callbacks.mine._target_=everyhook.EveryHook`` and PYTHONPATH, as
a user would, and checks that it received every hook. It subclasses plain Keras, not trainkit.
"""

from __future__ import annotations

import keras


class EveryHook(keras.callbacks.Callback):
    """Counts each of the 16 hooks and writes ``hook count`` lines to ``path`` at the end."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.counts: dict[str, int] = {}

    def _seen(self, hook: str) -> None:
        self.counts[hook] = self.counts.get(hook, 0) + 1

    def set_model(self, model):
        super().set_model(model)
        self._seen("set_model")

    def set_params(self, params):
        super().set_params(params)
        self._seen("set_params")

    def on_train_begin(self, logs=None):
        self._seen("on_train_begin")

    def on_train_end(self, logs=None):
        self._seen("on_train_end")

    def on_epoch_begin(self, epoch, logs=None):
        self._seen("on_epoch_begin")

    def on_epoch_end(self, epoch, logs=None):
        self._seen("on_epoch_end")

    def on_train_batch_begin(self, batch, logs=None):
        self._seen("on_train_batch_begin")

    def on_train_batch_end(self, batch, logs=None):
        self._seen("on_train_batch_end")

    def on_test_begin(self, logs=None):
        self._seen("on_test_begin")

    def on_test_end(self, logs=None):
        self._seen("on_test_end")

    def on_test_batch_begin(self, batch, logs=None):
        self._seen("on_test_batch_begin")

    def on_test_batch_end(self, batch, logs=None):
        self._seen("on_test_batch_end")

    def on_predict_begin(self, logs=None):
        self._seen("on_predict_begin")

    def on_predict_batch_begin(self, batch, logs=None):
        self._seen("on_predict_batch_begin")

    def on_predict_batch_end(self, batch, logs=None):
        self._seen("on_predict_batch_end")

    def on_predict_end(self, logs=None):
        self._seen("on_predict_end")
        # predict is the job's last phase: write what was seen.
        with open(self.path, "w", encoding="utf-8") as out:
            for hook, count in sorted(self.counts.items()):
                out.write(f"{hook} {count}\n")
