"""How long every other callback spends in each of its hooks."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import keras
from rich.console import Console
from rich.table import Table

from callbacks.base import KERAS_HOOKS, TrainkitCallback

HOOKS = KERAS_HOOKS

PHASES = ("train", "test", "predict")


class HookProfiler(TrainkitCallback):
    """Times every hook of the other callbacks and reports a table per callback and hook.

    How it sees the other callbacks: Keras never shows a callback its ``CallbackList``, so the
    profiler wraps the hook methods of the run's callbacks (``context.callbacks``, set when the
    stack is built) the first time its own ``set_model`` runs. Outside the job call
    :meth:`attach` with the list yourself. Only hooks a callback overrides are wrapped: Keras's
    no-op defaults stay untouched, so Keras's "does any callback use batch-end hooks" check
    (async dispatch) answers as before.

    Put it first in the stack: hooks of callbacks listed before it run before it attaches.

    Its own cost: in a :class:`trainkit.stack.Stack` the batch hooks, the ones called every
    step, are timed by the stack's dispatch loop itself (one ``perf_counter`` read per call,
    shared between consecutive callbacks, and three list updates; no wrapper frame); other
    hooks and a plain ``model.fit`` go through a wrapper (two clock reads). The profiler
    measures what one timed call costs on the machine (:func:`timing_cost`, at attach) and
    reports it with the total (``profiler_overhead_s`` in the JSON, and the table's caption):
    about 0.2 us a call here, a few microseconds a step for a full stack.

    Reports: the full table (every callback, then every callback x hook) is saved as
    ``hook_profile.txt`` (and the numbers as ``hook_profile.json``) in the run directory at
    ``on_job_end`` (including ``evaluate`` and ``predict``), or after ``fit`` (``on_train_end``)
    outside a job's stack. The terminal gets, once, at the job's end, the ``top`` costliest
    hooks and the path of the full table (after ``fit`` when there is no job to end, plain
    ``model.fit``). Columns: calls, total, mean, max and the share of the measured wall time
    (fit + evaluate + predict as seen by the profiler's own hooks). Counts restart when a new
    ``fit`` begins after a report.

    Hooks: all ``on_{train,test,predict}_{begin,end}``, ``set_model``, ``on_job_end``.

    Args:
        print_table: print the costliest hooks (the full table is always saved).
        top: how many callback x hook rows the terminal shows.
        filename: base name of the saved files in the run directory.

    Example::

        cbs = [HookProfiler(), Timing(), MyCallback()]
        cbs[0].attach(cbs)                    # in a job's stack: context.callbacks
        model.fit(x, y, epochs=2, callbacks=cbs)
        # conf/callbacks/<stack>.yaml, first entry:
        #   hook_profiler: {_target_: callbacks.hook_profiler.HookProfiler}
    """

    chief_only = True  # multi-worker: only the chief writes (trainkit.stack.Stack)

    def __init__(
        self, print_table: bool = True, top: int = 10, filename: str = "hook_profile"
    ) -> None:
        super().__init__()
        self.print_table = print_table
        self.top = int(top)
        self.filename = filename
        self.stats: dict[tuple[str, str], list[float]] = {}
        self.wall: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._originals: list[tuple[keras.callbacks.Callback, str]] = []
        self._attached_ids: set[int] = set()
        self._names: dict[int, str] = {}
        self._phase_start: dict[str, float] = {}
        self._reported = False
        self.cost_per_call: float | None = None

    # -- wrapping -----------------------------------------------------------------------------

    def attach(self, callbacks: Iterable[keras.callbacks.Callback]) -> None:
        """Wrap the overridden hooks of ``callbacks`` (itself and already wrapped ones skipped)."""
        if self.cost_per_call is None:
            self.cost_per_call = timing_cost()
        for callback in callbacks:
            if callback is self or id(callback) in self._attached_ids:
                continue
            self._attached_ids.add(id(callback))
            name = self._unique_name(callback)
            self._names[id(callback)] = name
            for hook in HOOKS:
                method = getattr(callback, hook, None)
                # Keras marks its base-class no-ops with ``_is_default``.
                if method is None or getattr(method, "_is_default", False):
                    continue
                stats = self.stats.setdefault((name, hook), [0, 0.0, 0.0])
                setattr(callback, hook, _timed(method, stats))
                self._originals.append((callback, hook))

    def detach(self) -> None:
        """Put the original hook methods back."""
        for callback, hook in self._originals:
            if hook in vars(callback):
                delattr(callback, hook)
        self._originals.clear()
        self._attached_ids.clear()

    def _unique_name(self, callback: keras.callbacks.Callback) -> str:
        # The job names each callback after its stack entry; outside the job, the class.
        base = getattr(callback, "trainkit_name", None) or type(callback).__name__
        taken = set(self._names.values())
        name, n = base, 2
        while name in taken:
            name, n = f"{base}#{n}", n + 1
        return name

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        if self.context is not None:
            callbacks = self.context.callbacks
            if callbacks:
                self.attach(callbacks)

    # -- phases -------------------------------------------------------------------------------

    def _begin(self, phase: str) -> None:
        self._phase_start[phase] = time.perf_counter()

    def _end(self, phase: str) -> None:
        start = self._phase_start.pop(phase, None)
        if start is not None:
            self.wall[phase] += time.perf_counter() - start

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._reported:
            self.reset()
        self._begin("train")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._end("train")
        # In a job's stack, on_job_end reports once (rendering the full table costs ~0.5 s);
        # a plain model.fit() has no job end.
        if not (self.in_stack and self.context is not None):
            self.report("after fit", show=self.context is None)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Validation inside fit is already part of the train wall time.
        if "train" not in self._phase_start:
            self._begin("test")

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._end("test")

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._begin("predict")

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        self._end("predict")

    def on_job_end(self, status: str) -> None:
        try:
            for phase in list(self._phase_start):
                self._end(phase)
            self.report(f"job {status}")
        except Exception as error:  # on_job_end must not raise
            print(f"HookProfiler: could not write the report: {error}")

    def reset(self) -> None:
        for stats in self.stats.values():
            stats[:] = [0, 0.0, 0.0]
        self.wall = dict.fromkeys(PHASES, 0.0)
        self._reported = False

    # -- report -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The profile as plain data: wall times and, per callback and hook, the timings."""
        callbacks: dict[str, dict[str, dict[str, float]]] = {
            name: {} for name in self._names.values()
        }
        for (name, hook), (calls, total, longest) in self.stats.items():
            if calls:
                callbacks[name][hook] = {
                    "calls": int(calls),
                    "total_s": total,
                    "mean_s": total / calls,
                    "max_s": longest,
                }
        return {
            "wall_time_s": dict(self.wall),
            "profiler_overhead_s": self.overhead(),
            "profiler_cost_per_call_s": self.cost_per_call,
            "callbacks": callbacks,
        }

    def overhead(self) -> float:
        """Seconds the profiler's own timing added: timed calls x :func:`timing_cost`."""
        calls = sum(stats[0] for stats in self.stats.values())
        return calls * (self.cost_per_call or 0.0)

    def table(self, title: str = "", top: int | None = None) -> Table:
        """Every callback's total, then every callback x hook; ``top``: only the ``top``
        costliest callback x hook rows."""
        wall = sum(self.wall.values())
        heading = "Callback hook times"
        if top is not None:
            heading = f"The {top} costliest callback hooks"
        table = Table(title=f"{heading} ({title})" if title else heading)
        for column in ("callback", "hook", "calls", "total ms", "mean µs", "max ms", "% wall"):
            table.add_column(column, justify="left" if column in ("callback", "hook") else "right")

        def add(name: str, hook: str, calls: float, total: float, longest: float) -> None:
            share = f"{100 * total / wall:.2f}" if wall > 0 else "-"
            mean = f"{total / calls * 1e6:.1f}" if calls else "-"
            table.add_row(
                name,
                hook,
                str(int(calls)),
                f"{total * 1e3:.2f}",
                mean,
                f"{longest * 1e3:.2f}",
                share,
            )

        if top is None:
            totals: dict[str, list[float]] = {}
            for (name, _), (calls, total, longest) in self.stats.items():
                summed = totals.setdefault(name, [0, 0.0, 0.0])
                summed[0] += calls
                summed[1] += total
                summed[2] = max(summed[2], longest)
            for name, (calls, total, longest) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
                add(name, "(all hooks)", calls, total, longest)
            table.add_section()
        rows = [item for item in self.stats.items() if item[1][0]]
        rows.sort(key=lambda item: -item[1][1])
        for (name, hook), (calls, total, longest) in rows[:top]:
            add(name, hook, calls, total, longest)
        walls = ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in self.wall.items())
        overhead = self.overhead()
        table.caption = (
            f"wall time: {walls}; the profiler's own timing: {overhead * 1e3:.2f} ms "
            f"({(self.cost_per_call or 0.0) * 1e6:.2f} µs a call)"
        )
        return table

    def report(self, title: str = "", show: bool = True) -> None:
        """Save the full table (``.txt``) and the numbers (``.json``); with ``show`` (and
        ``print_table``) print the ``top`` costliest hooks and where the full table is."""
        self._reported = True
        buffer = io.StringIO()
        Console(file=buffer, width=120, color_system=None).print(self.table(title))
        path = self.run_path(f"{self.filename}.txt")
        path.write_text(buffer.getvalue())
        self.run_path(f"{self.filename}.json").write_text(json.dumps(self.summary(), indent=2))
        if show and self.print_table:
            console = Console()
            if not console.is_terminal:
                console = Console(width=120)  # CI logs: rich's 80 columns would cut hook names
            console.print(self.table(title, top=self.top))
            console.print(f"every callback and hook: {path}", soft_wrap=True, highlight=False)


def _timed(method: Callable[..., Any], stats: list[float]) -> Callable[..., Any]:
    clock = time.perf_counter

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return method(*args, **kwargs)
        finally:
            elapsed = clock() - start
            stats[0] += 1
            stats[1] += elapsed
            if elapsed > stats[2]:
                stats[2] = elapsed

    # A Stack times batch hooks in its own loop (trainkit.stack.Stack._bind_batch_hooks):
    # it calls the method itself and adds to the same stats.
    timed.trainkit_timed = (method, stats)  # type: ignore[attr-defined]
    return timed


def timing_cost(calls: int = 2000) -> float:
    """Seconds the profiler adds to one timed hook call in a stack's batch loop (a clock
    read and three list updates), measured on this machine: the loop with timing minus the
    loop without, over ``calls`` calls of a no-op."""
    clock = time.perf_counter
    stats = [0, 0.0, 0.0]

    def noop(batch: int, logs: Any = None) -> None:
        pass

    best = float("inf")
    for _ in range(3):  # the best of three: the least disturbed by other processes
        start = clock()
        for i in range(calls):
            noop(i, logs=None)
        plain = clock() - start
        start = clock()
        now = clock()
        for i in range(calls):
            noop(i, logs=None)
            end = clock()
            elapsed = end - now
            now = end
            stats[0] += 1
            stats[1] += elapsed
            if elapsed > stats[2]:
                stats[2] = elapsed
        best = min(best, (clock() - start - plain) / calls)
    return max(best, 0.0)
