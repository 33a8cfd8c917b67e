"""What one job measured about its model, for comparing models: ``model_report.json``."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import keras
import psutil

from callbacks.base import TrainkitCallback
from trainkit.context import JobStatus

log = logging.getLogger("trainkit")


class ModelReport(TrainkitCallback):
    """Writes ``<run_dir>/model_report.json`` at the job's end: the model's size and cost, its
    speed on this machine and its accuracy, with measured proxies for what the source documents
    compare (fine detail, performance, flexibility, compute cost).

    Fields:

    * ``model``, ``input_size``, ``params`` (trainable), ``gmacs`` (one forward pass of one
      image at the trained input size, ``trainkit.models.complexity``);
    * ``train_img_s``: training images per second over the epochs after the first (the first
      traces the graph), or the first when it is the only one;
    * ``infer_img_s`` and ``infer_ms_per_image``: a timed ``predict`` pass over the test split;
    * ``memory_mb``: the growth of the process's resident memory from before training to its
      largest sample (taken at every epoch end and after evaluate and the extra passes): what
      the model, its optimizer state and its activations took, comparable between the jobs of
      one sweep even when they share a process;
    * ``test_accuracy``: the job's ``evaluate`` on the test split;
    * ``half_res_accuracy`` and ``detail_kept``: accuracy on the test images downscaled to half
      their side and scaled back, and its ratio to ``test_accuracy`` (fine detail: how much of
      the accuracy survives losing it);
    * ``native_size``, ``min_size``, ``imagenet_weights``: flexibility, from the registry.

    ``trainkit.compare`` gathers these files into the comparison table of a sweep
    (``python run.py -m experiment=compare``).

    Hooks: ``on_train_begin``, ``on_epoch_begin``, ``on_epoch_end``, ``on_test_end``;
    ``on_job_end`` (the extra passes and the file).

    Example::

        python run.py -m experiment=compare model=alexnet,mobilenet_v2
        # conf/callbacks/<stack>.yaml:  model_report: {_target_: callbacks.model_report.ModelReport}
    """

    uses_clock = True

    def __init__(self, filename: str = "model_report.json") -> None:
        super().__init__()
        self.filename = filename
        self.report: dict[str, Any] = {}
        self._epochs: list[tuple[int, float]] = []  # (steps, seconds) per epoch
        self._test: dict[str, float] = {}
        self._in_fit = False
        self._rss_before = self._rss_peak = 0.0

    def _sample_memory(self) -> None:
        rss = psutil.Process().memory_info().rss / 2**20
        self._rss_peak = max(self._rss_peak, rss)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        self._epochs = []
        self._rss_before = psutil.Process().memory_info().rss / 2**20
        self._rss_peak = self._rss_before

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_step = self.clock.step

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        steps = self.clock.step - self._epoch_step
        train_time = (logs or {}).get("train_time")  # Timing's, without validation
        seconds = train_time if train_time else time.perf_counter() - self._epoch_start
        self._epochs.append((steps, float(seconds)))
        self._sample_memory()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = False

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._sample_memory()
        if not self._in_fit and logs:
            self._test = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}

    def on_job_end(self, status: JobStatus) -> None:
        if JobStatus.of(status) is not JobStatus.FINISHED or self.model is None:
            return
        try:
            self.report = self._measure()
            path = self.run_path(self.filename)
            path.write_text(json.dumps(self.report, indent=2) + "\n", encoding="utf-8")
        except Exception as exc:  # on_job_end must not raise
            log.warning("ModelReport: %s: %s", type(exc).__name__, exc)

    # -- the measurements ------------------------------------------------------------------

    def _train_rate(self) -> float | None:
        batch = self.context.batch_size if self.context is not None else None
        timed = self._epochs[1:] or self._epochs
        steps = sum(s for s, _ in timed)
        seconds = sum(t for _, t in timed)
        if not batch or not steps or seconds <= 0:
            return None
        return batch * steps / seconds

    def _measure(self) -> dict[str, Any]:
        from trainkit.models import get_spec
        from trainkit.models.complexity import count_macs

        ctx = self.context
        model = self.model
        size = int(model.input_shape[1])
        report: dict[str, Any] = {
            "model": ctx.model_name if ctx is not None else model.name,
            "input_size": size,
            "params": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
            "gmacs": count_macs(model) / 1e9,
            "train_img_s": self._train_rate(),
            "test_accuracy": self._test.get("accuracy"),
        }
        test = ctx.test_data if ctx is not None else None
        if test is not None:
            report.update(self._inference(test))
            half = self._half_resolution_accuracy(test, size)
            report["half_res_accuracy"] = half
            accuracy = report["test_accuracy"]
            report["detail_kept"] = half / accuracy if accuracy and half is not None else None
        self._sample_memory()
        report["memory_mb"] = self._rss_peak - self._rss_before
        try:
            spec = get_spec(report["model"])
            report.update(
                native_size=spec.native_size,
                min_size=spec.min_size,
                imagenet_weights=spec.imagenet_weights,
            )
        except Exception:  # a model from outside the registry
            pass
        return report

    def _inference(self, test: Any) -> dict[str, float]:
        images = test.map(lambda x, y: x)
        self.model.predict(images.take(1), verbose=0)  # traced already; warms the pipeline
        start = time.perf_counter()
        predictions = self.model.predict(images, verbose=0)
        seconds = time.perf_counter() - start
        n = len(predictions)
        return {"infer_img_s": n / seconds, "infer_ms_per_image": 1000 * seconds / n}

    def _half_resolution_accuracy(self, test: Any, size: int) -> float | None:
        import tensorflow as tf

        half = max(1, size // 2)

        def blur(images: Any, labels: Any) -> tuple[Any, Any]:
            small = tf.image.resize(images, (half, half), antialias=True)
            return tf.image.resize(small, (size, size)), labels

        metric = keras.metrics.SparseCategoricalAccuracy()
        for images, labels in test.map(blur):
            metric.update_state(labels, self.model.predict_on_batch(images))
        return float(metric.result())
