"""Running, in-process, the tasks that a service's on-commit callbacks would send to a worker."""

import functools
from collections.abc import Callable


def run_tasks(callbacks: list[Callable[[], object]]) -> int:
    """Run each captured ``task.delay_on_commit`` callback's task body here; how many ran.

    The task's own code runs (``Task.run``), without the worker's connection handling, which
    would close the test's transaction. Other callbacks are called as they are.
    """
    ran = 0
    for callback in callbacks:
        task = getattr(getattr(callback, "func", None), "__self__", None)
        if isinstance(callback, functools.partial) and hasattr(task, "run"):
            task.run(*callback.args, **callback.keywords)
            ran += 1
        else:
            callback()
    return ran
