"""A loop on a daemon thread of its own, stopped cleanly: the checkpoint signer, the
projection follower and the recoverer are each one."""

from __future__ import annotations

import threading


class Background:
    """Runs `run()` on a daemon thread from `start()`; `stop()` sets `stopping` and waits up
    to `join_s` seconds for `run()` to notice and return."""

    name = "background"
    join_s = 10.0

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=self.join_s)

    def run(self) -> None:
        raise NotImplementedError
