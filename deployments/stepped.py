"""Long model jobs with per-step progress, one at a time per replica: the thread-to-event-loop bridge that
ImageGen and MusicGen share.

In: a blocking `work(on_step)` that calls `on_step(step, total)` on its worker thread after every step, and a
`progress(step, total)` that turns a step into the event to send (None: nothing for this step). Out (async
iterator): those events, then one `Finished(result)`. When the consumer stops iterating (the client closed the
stream, or its task was cancelled), the next `on_step` raises `GenerationCancelled` inside the worker, which ends
the model's loop, and the turn is held until it has stopped. Jobs wait for their turn on the event loop rather
than in a thread, so a request cancelled while waiting costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Result = TypeVar("Result")


class GenerationCancelled(Exception):
    """Raised from the step callback when the client has gone: it ends the model's loop."""


@dataclass
class StepStats:
    """A replica's counters since it started."""

    completed: int = 0
    cancelled: int = 0  # the client closed the stream; the model's loop was stopped
    failed: int = 0  # accepted, then the engine raised
    steps: int = 0  # model steps run


@dataclass
class Finished(Generic[Result]):
    """The last item of a run: what `work` returned."""

    result: Result


class SteppedRunner:
    """Runs jobs one at a time and streams their progress; see the module docstring."""

    def __init__(self) -> None:
        self.stats = StepStats()
        self._turns: asyncio.Lock | None = None
        self._turns_loop: asyncio.AbstractEventLoop | None = None

    async def run(
        self,
        work: Callable[[Callable[[int, int], None]], Result],
        progress: Callable[[int, int], Any],
    ) -> AsyncGenerator[Any, None]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        gone = threading.Event()

        def on_step(step: int, total: int) -> None:  # on the worker thread
            if gone.is_set():
                raise GenerationCancelled(f"stopped at step {step} of {total}: the client closed the stream")
            self.stats.steps += 1
            event = progress(step, total)
            if event is not None:
                loop.call_soon_threadsafe(events.put_nowait, event)

        async with self._turn_lock():
            job = asyncio.ensure_future(asyncio.to_thread(work, on_step))
            # runs after every progress event the thread posted (the loop runs callbacks in order): the end marker
            job.add_done_callback(lambda _: events.put_nowait(None))
            try:
                while (event := await events.get()) is not None:
                    yield event
                result = job.result()
            finally:
                gone.set()
                if not job.done():  # closed or cancelled mid-way: hold the turn until the model's loop has stopped
                    with contextlib.suppress(Exception):
                        await asyncio.shield(job)
                self._count(job)
        yield Finished(result)

    def _count(self, job: asyncio.Future) -> None:
        error = job.exception() if job.done() and not job.cancelled() else None
        if not job.done() or job.cancelled() or isinstance(error, GenerationCancelled):
            self.stats.cancelled += 1
        elif error is not None:
            self.stats.failed += 1
        else:
            self.stats.completed += 1

    def _turn_lock(self) -> asyncio.Lock:
        # a replica has one event loop; tests drive the class from several (asyncio.run per call)
        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns_loop is not loop:
            self._turns, self._turns_loop = asyncio.Lock(), loop
        return self._turns
