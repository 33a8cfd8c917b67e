"""The ``tf.distribute`` strategy a job builds, compiles and trains under (``trainer.strategy``).

``auto``
    one device: the first GPU if there is one, else the CPU (``OneDeviceStrategy``).
``mirrored``
    every local GPU, or the devices of ``trainer.devices`` (``["/cpu:0", "/cpu:1"]``), one
    replica each (``MirroredStrategy``).
``multi_worker``
    one process per machine, the cluster read from ``TF_CONFIG``
    (``MultiWorkerMirroredStrategy``). Before training, each worker waits at most
    ``trainer.cluster_timeout`` seconds for its peers to answer; a missing peer is a
    :class:`~trainkit.errors.TrainkitError` (one line, exit 2) instead of a hang.

``trainer.batch_size`` is the global batch: ``tf.distribute`` splits each batch over the replicas
of every worker, and auto-sharding (:func:`shard`) hands each worker its own part of the data.

Keras 3 (3.15) breaks under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585): its symbolic
build reduces a ``PerReplica`` input batch with ``strategy.reduce``, and ``reduce_per_replica``
reduces scalar metrics along axis 0. :func:`patch_keras_for_multi_worker` fixes both, for
multi-worker strategies only; ``tests/distribute`` proves the two workers fail without it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from trainkit.errors import ConfigError, TrainkitError

log = logging.getLogger("trainkit")

STRATEGIES = ("auto", "mirrored", "multi_worker")


class ClusterError(TrainkitError):
    """A multi-worker job whose cluster cannot form (a peer missing, TF_CONFIG wrong)."""


@dataclass(frozen=True)
class Placement:
    """The strategy a job runs under and this process's place in it."""

    strategy: Any  # tf.distribute.Strategy
    name: str  # auto | mirrored | multi_worker
    is_chief: bool = True
    worker_index: int = 0
    num_workers: int = 1

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self) -> str:
        try:
            devices = ", ".join(self.strategy.extended.worker_devices)
        except RuntimeError:  # the default strategy has no device list
            devices = "the default device (the first GPU, or the CPU)"
        where = (
            f"worker {self.worker_index} of {self.num_workers}, " if self.num_workers > 1 else ""
        )
        return f"strategy {self.name}: {where}{self.replicas} replica(s) in sync on {devices}"


# -- TF_CONFIG ---------------------------------------------------------------------------------


def read_tf_config(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``TF_CONFIG`` as a dict; a ConfigError says what is wrong with it."""
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            "trainer.strategy=multi_worker needs TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        config = json.loads(raw)
        config["cluster"], config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"TF_CONFIG is not a cluster and a task: {raw[:200]}") from None
    return config


def task_position(config: dict[str, Any]) -> tuple[int, int, bool]:
    """(index of this worker among all workers, number of workers, is chief) of a TF_CONFIG.

    The chief is the task of type ``chief``, or worker 0 when the cluster has no chief; it
    counts as worker 0 and the workers after it.
    """
    cluster, task = config["cluster"], config["task"]
    chiefs = list(cluster.get("chief", []))
    workers = list(cluster.get("worker", []))
    kind, index = task["type"], int(task["index"])
    if kind == "chief":
        return 0, len(chiefs) + len(workers), True
    position = len(chiefs) + index
    return position, len(chiefs) + len(workers), position == 0


def peer_addresses(config: dict[str, Any]) -> list[str]:
    """The ``host:port`` of every other task of the cluster (chief and workers)."""
    cluster, task = config["cluster"], config["task"]
    peers = []
    for kind in ("chief", "worker"):
        for index, address in enumerate(cluster.get(kind, [])):
            if kind == task["type"] and index == int(task["index"]):
                continue
            peers.append(address)
    return peers


def own_address(config: dict[str, Any]) -> str:
    """This task's ``host:port`` in the cluster."""
    task = config["task"]
    return config["cluster"][task["type"]][int(task["index"])]


def wait_for_peers(
    own: str | None, peers: list[str], timeout: float, interval: float = 0.3
) -> None:
    """Return once every peer accepts a TCP connection; ClusterError after ``timeout`` s.

    MultiWorkerMirroredStrategy's constructor waits for missing peers forever, in C++ that holds
    the GIL and lets no signal handler run. So the workers meet before it: each listens on its
    own cluster port (a plain socket, closed before TensorFlow's server takes the port) until it
    has reached every peer, either that peer's socket or its already started server.
    """
    listener = None
    if own is not None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("", int(own.rpartition(":")[2])))
            listener.listen(64)
        except OSError:  # taken: TensorFlow will say so itself
            listener.close()
            listener = None
    try:
        deadline = time.monotonic() + timeout
        waiting = list(peers)
        while True:
            waiting = [address for address in waiting if not _accepts(address)]
            if not waiting:
                break
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"multi-worker peers did not come up within trainer.cluster_timeout="
                    f"{timeout:g}s: {', '.join(waiting)} (start every worker of TF_CONFIG, "
                    "or raise the timeout)"
                )
            time.sleep(interval)
        # A peer that saw this socket a moment ago may still be probing: give it time to see
        # it too before the port goes quiet while TensorFlow's server starts on it.
        time.sleep(min(2 * interval + 1.0, timeout))
    finally:
        if listener is not None:
            listener.close()


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


# -- the strategy --------------------------------------------------------------------------------


def make_strategy(
    name: str = "auto", devices: list[str] | None = None, cluster_timeout: float = 300.0
) -> Placement:
    """Build the strategy ``trainer.strategy`` names (see the module docstring)."""
    import tensorflow as tf

    # tf.distribute logs every reduction it plans at INFO: noise in the job's log.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if name not in STRATEGIES:
        raise ConfigError(
            f"unknown trainer.strategy '{name}': choose one of {', '.join(STRATEGIES)}"
        )
    if name == "auto":
        if devices:
            return Placement(tf.distribute.OneDeviceStrategy(devices[0]), name)
        # TensorFlow's default strategy: ops go to the first GPU if there is one, else the CPU,
        # with none of a distributed dataset's overhead.
        return Placement(tf.distribute.get_strategy(), name)
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
        return Placement(strategy, name)
    config = read_tf_config()
    position, workers, chief = task_position(config)
    wait_for_peers(own_address(config), peer_addresses(config), float(cluster_timeout))
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    patch_keras_for_multi_worker()
    return Placement(strategy, name, is_chief=chief, worker_index=position, num_workers=workers)


def shard(dataset: Any) -> Any:
    """``dataset`` set to be split by elements between workers (tf.data auto-sharding by DATA:
    in-memory sources have no files to split), each worker reading its own share."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# -- keras-team/keras#20585 ------------------------------------------------------------------------


def _is_multi_worker(strategy: Any) -> bool:
    from keras.src.backend.tensorflow import trainer as tf_trainer

    return bool(strategy is not None and tf_trainer._collective_all_reduce_multi_worker(strategy))


def patch_keras_for_multi_worker() -> None:
    """Make Keras 3's TensorFlow trainer work under MultiWorkerMirroredStrategy (idempotent).

    1. ``_maybe_symbolic_build`` pulls a batch and reduces it with ``strategy.reduce("MEAN",
       PerReplica, axis=None)``, which a multi-worker strategy cannot convert; the build only
       needs shapes and dtypes, so the dataset's element spec is passed instead.
    2. ``reduce_per_replica`` with ``"mean"`` (what ``fit`` and ``evaluate`` use) reduces every
       value along axis 0, and a scalar metric has none: scalars are reduced with ``axis=None``.

    Single-process strategies go through Keras's own code unchanged.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_trainkit_multi_worker_patch", False):
        return
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or not _is_multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        # Only shapes and dtypes are read: the dataset's element spec gives them without
        # pulling a batch (under MWMS a pull is a collective, and it leaves an iterator behind).
        data_batch = iterator.data_adapter.get_tf_dataset().element_spec
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not _is_multi_worker(strategy):
            return original_reduce(values, strategy, reduction)

        def _reduce(value):
            local = strategy.experimental_local_results(value)[0]
            axis = None if local.shape.rank == 0 else 0
            return strategy.reduce("MEAN", value, axis=axis)

        return tree.map_structure(_reduce, values)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer._trainkit_multi_worker_patch = True
