"""The logger the release code writes to: a task's ``self.log`` or a module's ``logging`` logger."""

from __future__ import annotations

from typing import Any, Protocol


class TaskLog(Protocol):
    """What both Airflow's task logger (structlog) and ``logging.Logger`` offer, and all we use."""

    def info(self, msg: Any, /, *args: Any) -> None: ...

    def warning(self, msg: Any, /, *args: Any) -> None: ...

    def error(self, msg: Any, /, *args: Any) -> None: ...
