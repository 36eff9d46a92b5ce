"""Where the units of a sweep run: in this process (the default) or as Ray tasks, one unit
per task, on a local Ray or a cluster (``ray.init(address=...)`` before the sweep)."""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

EXECUTORS = ("local", "ray")


def check_executor(executor: str) -> str:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    return executor


def task_resources(resources: dict | None) -> dict:
    """Ray resources per task: ``{"num_cpus": 1}`` unless given (``{"num_gpus": 1}``...)."""
    resources = dict(resources or {"num_cpus": 1})
    unknown = set(resources) - {"num_cpus", "num_gpus", "memory", "resources"}
    if unknown:
        raise ValueError(f"unknown Ray task resources {sorted(unknown)}")
    return resources


def ray_map(fn: Callable, items: Sequence, resources: dict | None = None,
            shared: object = None) -> Iterator[tuple[int, object]]:
    """Run ``fn(item)`` (or ``fn(shared, item)`` when ``shared`` is given: sent to the cluster
    once, not with every task) for every item, each as one Ray task, and yield ``(index,
    result)`` in the order the tasks finish, so the caller can store each result at once. Uses
    the Ray this process is connected to (``ray.init(address="auto")`` for a cluster), else
    starts a local one. A task's error is raised here, after the results that came before it."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    remote = ray.remote(**task_resources(resources))(fn)
    args = () if shared is None else (ray.put(shared),)
    pending = {remote.remote(*args, item): i for i, item in enumerate(items)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            yield pending.pop(ref), ray.get(ref)
