"""Checkpoint: top-k best, last and every-N-steps files that load back to the same model."""

from __future__ import annotations

import keras
import numpy as np

from callbacks.checkpoint import Checkpoint
from tests.callbacks.cb_testing import (
    ModelPool,
    Recorder,
    Script,
    batches,
    make_model,
    regression_data,
)
from trainkit.context import RunContext

VAL_LOSS = [0.5, 0.3, 0.4, 0.2]  # ranking: epoch 4, 2, 3, 1 (1-based)

# The subject is the files, not the model: one model per set of options, reset before each
# fit; the data as a dataset of batches of 8, in order.
MODELS = ModelPool()
FIT = {"shuffle": False, "verbose": 0}


def test_top_k_last_and_step_files_load_back_to_the_same_predictions(tmp_path):
    x, y = regression_data(32)  # 4 steps an epoch, 16 in all
    model = MODELS.get(optimizer="adam")
    checkpoint = Checkpoint(
        save_top_k=2, every_n_steps=3, keep_step_checkpoints=2, save_optimizer=True
    )
    checkpoint.set_context(RunContext(run_dir=tmp_path))
    recorder = Recorder(weights=True)
    model.fit(
        batches(x, y),
        epochs=4,
        callbacks=[Script("val_loss", VAL_LOSS), checkpoint, recorder],
        **FIT,
    )
    folder = tmp_path / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "epoch=002-val_loss=0.3000.keras",
        "epoch=004-val_loss=0.2000.keras",
        "last.keras",
        # steps 3, 6, 9, 12, 15 were saved; the two most recent are kept
        "step=00000012.keras",
        "step=00000015.keras",
    ]
    assert checkpoint.best_model_path == str(folder / "epoch=004-val_loss=0.2000.keras")
    assert checkpoint.best_model_score == 0.2
    assert set(checkpoint.best_k_models.values()) == {0.2, 0.3}
    assert checkpoint.last_model_path == str(folder / "last.keras")

    reference = MODELS.get()
    for name, epoch in [
        ("epoch=002-val_loss=0.3000.keras", 1),
        ("epoch=004-val_loss=0.2000.keras", 3),
        ("last.keras", 3),
    ]:
        loaded = keras.models.load_model(folder / name)
        reference.set_weights(recorder.epoch_weights[epoch])
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-6
        )
    # the full model: the optimizer state is in the file too
    loaded = keras.models.load_model(folder / "step=00000012.keras")
    assert int(loaded.optimizer.iterations.numpy()) == 12
    reference.set_weights(recorder.epoch_weights[2])  # step 12 = end of epoch 3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), reference.predict(x, verbose=0))


def test_max_mode_and_top_k_of_all(tmp_path):
    data = batches(*regression_data(16))
    checkpoint = Checkpoint(monitor="val_accuracy", save_top_k=-1, save_last=False)
    checkpoint.set_context(RunContext(run_dir=tmp_path))
    scores = [0.5, 0.7, 0.6]
    MODELS.get().fit(data, epochs=3, callbacks=[Script("val_accuracy", scores), checkpoint], **FIT)
    assert len(list((tmp_path / "checkpoints").glob("epoch=*.keras"))) == 3
    assert checkpoint.best_model_path.endswith("epoch=002-val_accuracy=0.7000.keras")
    assert not (tmp_path / "checkpoints" / "last.keras").exists()


def test_val_mae_keeps_the_lowest_as_the_job_does(tmp_path):
    """One direction rule: the checkpoint's best is the value the job hands a sweeper."""
    from trainkit.job import monitored_value

    data = batches(*regression_data(16))
    checkpoint = Checkpoint(monitor="val_mae", save_top_k=1, save_last=False)
    checkpoint.set_context(RunContext(run_dir=tmp_path))
    scores = [0.5, 0.2, 0.4]
    model = MODELS.get()
    history = model.fit(
        data, epochs=3, callbacks=[Script("val_mae", scores), checkpoint], **FIT
    ).history
    assert checkpoint.best_model_score == 0.2
    assert monitored_value(history, {}, "val_mae", model) == 0.2


def test_step_files_follow_the_clock_under_steps_per_execution(tmp_path):
    x, y = regression_data(40)  # 5 steps an epoch; executions of 2 steps: 2, 4, 5 | 7, 9, 10
    checkpoint = Checkpoint(save_top_k=0, save_last=False, every_n_steps=3)
    checkpoint.set_context(RunContext(run_dir=tmp_path))
    make_model(steps_per_execution=2).fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[checkpoint]
    )
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step=*.keras"))
    # multiples of 3 crossed at steps 4 (3), 7 (6) and 9 (9): one file per crossing
    assert names == ["step=00000004.keras", "step=00000007.keras", "step=00000009.keras"]


def test_background_saves_hold_the_weights_of_the_step_they_were_due(tmp_path, monkeypatch):
    """A slow disk: each file is written a while after its step, on the writer thread, while
    training goes on; every file still holds the weights of the step it was due at."""
    import threading
    import time

    from callbacks import checkpoint as module

    writers = []
    write = module._write

    def slow_write(model, target, with_optimizer):
        time.sleep(0.2)
        writers.append(threading.current_thread().name)
        write(model, target, with_optimizer)

    monkeypatch.setattr(module, "_write", slow_write)
    x, y = regression_data(32)  # 4 steps an epoch: step files at 4, 8, 12, 16 = epoch ends
    checkpoint = Checkpoint(save_top_k=2, every_n_steps=4)
    checkpoint.set_context(RunContext(run_dir=tmp_path))
    recorder = Recorder(weights=True)
    model = MODELS.get(optimizer="adam")
    model.fit(
        batches(x, y),
        epochs=4,
        callbacks=[Script("val_loss", VAL_LOSS), checkpoint, recorder],
        **FIT,
    )
    assert writers and set(writers) == {"trainkit-checkpoint"}
    folder = tmp_path / "checkpoints"
    files = {
        "epoch=002-val_loss=0.3000.keras": 1,
        "epoch=004-val_loss=0.2000.keras": 3,
        "last.keras": 3,
        **{f"step={4 * (epoch + 1):08d}.keras": epoch for epoch in range(4)},
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    reference = MODELS.get()
    for name, epoch in files.items():
        loaded = keras.models.load_model(folder / name)
        reference.set_weights(recorder.epoch_weights[epoch])
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-6
        )
    assert checkpoint.best_model_path == str(folder / "epoch=004-val_loss=0.2000.keras")


def test_saves_after_the_first_build_no_throwaway_keras_objects(tmp_path, monkeypatch):
    """Keras's save builds a bare Optimizer, Layer, Metric and Loss to learn which attributes to
    skip, and its cache of those sets never hits (trainkit.keras_saving): every checkpoint did
    that work again, on the writer thread beside training. Only the first save may now."""
    import threading

    from keras.src.optimizers.optimizer import Optimizer

    built: list[str] = []
    init = Optimizer.__init__

    def counting_init(self, *args, **kwargs):
        built.append(threading.current_thread().name)
        init(self, *args, **kwargs)

    x, y = regression_data(32)
    model = MODELS.get(optimizer="adam")
    checkpoint = Checkpoint(save_top_k=-1)
    checkpoint.set_context(RunContext(run_dir=tmp_path))
    monkeypatch.setattr(Optimizer, "__init__", counting_init)
    model.fit(batches(x, y), epochs=3, callbacks=[Script("val_loss", VAL_LOSS), checkpoint], **FIT)
    saves = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert len(saves) == 4  # three best (all kept) and last
    # The shadow model's compile builds one optimizer; the first save's skip sets one more.
    writer_builds = [name for name in built if name == "trainkit-checkpoint"]
    assert len(writer_builds) <= 1, built
