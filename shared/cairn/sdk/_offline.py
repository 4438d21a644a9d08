"""``OfflineRun``: what ``Run.get_context()`` returns outside a job, as in Azure ML v1."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["OfflineRun"]


class OfflineRun:
    """What ``Run.get_context()`` returns outside a job: prints, keeps values, never fails."""

    id = "OfflineRun"

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._tags: dict[str, str] = {}
        print("cairn: not inside a job; this run logs offline to stdout", file=sys.stderr)

    def _keep(
        self, kind: str, name: str, value: Any, description: str = "", step: int | None = None
    ) -> None:
        about = "".join(
            [f" ({description})" if description else "", f" at step {step}" if step else ""]
        )
        print(f"Attempted to log {kind} metric {name}{about}:\n{value}")
        if kind == "scalar":
            existing = self._metrics.get(name)
            if existing is None:
                self._metrics[name] = value
            elif isinstance(existing, list):
                existing.append(value)
            else:
                self._metrics[name] = [existing, value]
        else:
            self._metrics[name] = value

    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        self._keep("scalar", name, value, description, step)

    def log_list(self, name: str, value: list[Any], description: str = "") -> None:
        self._keep("list", name, value, description)

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        self._keep("row", name, kwargs, description or "")

    def log_table(self, name: str, value: dict[str, list[Any]], description: str = "") -> None:
        self._keep("table", name, value, description)

    def log_image(
        self, name: str, path: str | None = None, plot: Any = None, description: str = ""
    ) -> None:
        self._keep("image", name, path or f"<plot {type(plot).__name__}>", description)

    def tag(self, key: str, value: str | None = None) -> None:
        self._tags[key] = value or ""

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})

    def get_tags(self) -> dict[str, str]:
        return dict(self._tags)

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        return {k: v for k, v in self._metrics.items() if name in (None, k)}

    def upload_file(self, name: str, path_or_stream: Any) -> None:
        print(f"Attempted to upload file {name} from {path_or_stream}")

    def get_status(self) -> str:
        return "Running"

    def flush(self) -> None:
        return None

    def complete(self) -> None:
        print("Attempted to complete the run")

    def fail(self, error_details: Any = None, error_code: str | None = None) -> None:
        print(f"Attempted to fail the run: {error_details or error_code or ''}")

    def cancel(self) -> None:
        return None

    def __enter__(self) -> OfflineRun:
        return self

    def __exit__(self, *_: object) -> None:
        return None
