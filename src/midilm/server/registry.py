"""The models a server runs, by id, and what each can do (its capabilities and this
server's limits per request)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midilm.server.errors import ApiError
from midilm.server.limits import (
    MAX_BARS,
    MAX_CANDIDATES,
    MAX_NOTES,
    MAX_RENDER_SECONDS,
    MAX_TRACKS,
    ServerLimits,
)

if TYPE_CHECKING:
    from midilm.model.music_model import MusicModel

__all__ = ["ModelRegistry", "capabilities"]


class ModelRegistry:
    """Loaded models by id; the first is the default."""

    def __init__(self, models: Mapping[str, MusicModel]) -> None:
        if not models:
            raise ValueError("a server needs at least one model")
        self._models = dict(models)
        self.default = next(iter(self._models))

    @classmethod
    def load(cls, specs: Iterable[str | Path | tuple[str, Any]]) -> ModelRegistry:
        """Load models from ``"DIR"``, ``"NAME=DIR"``, ``"bundled:NAME"`` or ``(name,
        MusicModel-or-path)`` items; ids are the folder names unless given."""
        from midilm.model.loading import BUNDLED_PREFIX, load_model
        from midilm.model.music_model import MusicModel

        models: dict[str, MusicModel] = {}
        for spec in specs:
            if isinstance(spec, tuple):
                name, source = spec
            else:
                text = str(spec)
                name, sep, path = text.partition("=")
                if not sep or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
                    name, path = "", text
                source = path
                if not name:
                    name = (
                        path[len(BUNDLED_PREFIX) :]
                        if path.startswith(BUNDLED_PREFIX)
                        else Path(path).expanduser().resolve().name
                    )
            if name in models:
                raise ValueError(f"two models are named {name!r}; name them with NAME=DIR")
            models[name] = source if isinstance(source, MusicModel) else load_model(source)
        return cls(models)

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    def get(self, model_id: str | None, *, field: str | None = "model") -> tuple[str, MusicModel]:
        model_id = model_id or self.default
        if model_id not in self._models:
            message = f"no model {model_id!r}; this server has {', '.join(self._models)}"
            if field is None:
                raise ApiError(404, "unknown_model", message)
            raise ApiError(422, "unknown_model", message, field=field)
        return model_id, self._models[model_id]


def capabilities(model_id: str, model: MusicModel, limits: ServerLimits) -> dict[str, Any]:
    """``model.capabilities()`` and what this server accepts per request (``limits``)."""
    return {
        "id": model_id,
        **model.capabilities(),
        "parameters": model.num_parameters,
        "limits": {
            "max_bars": MAX_BARS,
            "max_candidates": MAX_CANDIDATES,
            "max_tracks": MAX_TRACKS,
            "max_notes": MAX_NOTES,
            "max_render_seconds": MAX_RENDER_SECONDS,
            "max_upload_bytes": limits.max_upload_bytes,
            "job_timeout_s": limits.job_timeout_s,
        },
    }
