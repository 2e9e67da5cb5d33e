"""One model in memory, one worker thread: requests queue for it and stream their replies back.

The model is not safe to call from two threads at once (and two generations at once would only
share the same cores), so every generation runs on a single worker thread, in arrival order —
the single-engine queue of text-generation servers, without batching. Admission is bounded:
at most `max_pending` requests are running or waiting; the next one is refused at once (503)
instead of growing an unbounded queue. A streaming client that goes away stops its generation
at the next token.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator

from speech_adapter.errors import SpeechAdapterError
from speech_adapter.serve.protocol import APIError, ChatRequest, UserTurn


@dataclass
class Finished:
    """The end of a generation: the whole reply, why it stopped, and token counts."""

    reply: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


def _conversation(model, request: ChatRequest):
    """A Conversation holding every turn but the last, whose clips wait in `pending`."""
    from speech_adapter.inference.api import Conversation  # lazy: torch

    class Counted(Conversation):  # records the prompt length (audio tokens included) for `usage`
        prompt_tokens = 0

        def _batch(self):
            batch = super()._batch()
            self.prompt_tokens = int(batch["input_ids"].shape[1])
            return batch

    conv = Counted(model, system=request.system)
    for turn in request.turns[:-1]:
        if isinstance(turn, UserTurn):
            conv.turns.append(conv.user_record(turn.instruction, [_pieces(c) for c in turn.clips]))
        else:
            conv.turns.append({"role": "assistant", "content": turn})
    for clip in request.turns[-1].clips:
        conv.add_audio(clip)
    return conv


def _pieces(clip):
    from speech_adapter.inference.api import audio_pieces  # lazy: torch

    return audio_pieces(clip)


class Engine:
    """Runs generations for `model` one at a time; `stream(request)` yields text, then `Finished`."""

    def __init__(self, model, max_pending: int):
        self.model = model
        self.max_pending = max_pending
        self.pending = 0  # running + waiting; only touched on the event loop's thread
        self.served = 0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech-adapter-model")

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Finished]:
        """Text deltas as they are generated, then one `Finished`.

        Raises APIError(503) when `max_pending` requests are already in, APIError(400) for a
        request the model refuses (e.g. an instruction containing the audio placeholder).
        """
        if self.pending >= self.max_pending:
            raise APIError(503, f"server busy: {self.pending} requests running or queued "
                                f"(max_pending {self.max_pending}); retry later", "server_busy")
        self.pending += 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone (server shutting down)
                cancelled.set()

        def work() -> None:
            if cancelled.is_set():  # the client left while this request waited
                return
            try:
                put(self._generate(request, put, cancelled))
            except BaseException as e:  # handed to the request's coroutine, which raises it
                put(e)

        future = loop.run_in_executor(self._worker, work)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    self.served += 1
                    return
        finally:
            cancelled.set()
            self.pending -= 1
            future.cancel()  # drops it if it never started; a running one stops at its next token

    def _generate(self, request: ChatRequest, put, cancelled: threading.Event) -> Finished:
        # The decode loop embeds each token it keeps, one (1, 1) id at a time (the prompt goes in
        # as one (1, S) call): a hook on the embedding counts the reply's tokens exactly.
        kept: list[int] = []

        def count(module, args, output):
            if args[0].shape == (1, 1):
                kept.append(int(args[0]))

        hook = self.model.causal_lm.get_input_embeddings().register_forward_hook(count)
        try:
            conv = _conversation(self.model, request)
            for delta in conv.stream(request.turns[-1].instruction, **request.gen):
                if cancelled.is_set():
                    break
                put(delta)
        except SpeechAdapterError as e:
            raise APIError(400, str(e), "invalid_request") from None
        finally:
            hook.remove()
        reply = conv.turns[-1]["content"] if conv.turns and conv.turns[-1]["role"] == "assistant" else ""
        finish = "length" if len(kept) >= request.gen["max_new_tokens"] else "stop"
        return Finished(reply, finish, conv.prompt_tokens, len(kept))
