"""A wake-up signal shared by any number of waiters: one event per change, swapped on notify, never polled."""

import asyncio


class Notifier:
    """Waiters take `changed()` before checking their condition and then await it, so a notify that lands
    between the check and the wait is never lost. Like grpc_health's shared Condition, one notify wakes every
    waiter at once and an idle waiter costs one suspended coroutine, no task and no timer of its own."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wakes everyone waiting on the current change. Safe to call from synchronous code on the loop."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    def changed(self) -> asyncio.Event:
        """The event the next notify() sets."""
        return self._event

    @staticmethod
    async def wait(changed: asyncio.Event, timeout_s: float) -> bool:
        """True when `changed` was set, False when the timeout passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await changed.wait()
        except TimeoutError:
            return False
        return True
