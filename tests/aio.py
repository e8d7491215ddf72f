"""Running a coroutine from a test."""

import asyncio
import threading


def run(coroutine):
    """asyncio.run in a thread of its own: the browser tests' Playwright keeps an event loop running in the
    test thread for the rest of the session."""
    result = {}

    def target():
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as error:  # re-raised in the test's thread
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
