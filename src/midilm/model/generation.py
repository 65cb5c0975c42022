"""The sampling settings a model directory suggests.

A model directory stores them twice: in ``midilm.json`` (``"generation"``, read by midilm's
own sampler) and as Hugging Face's ``generation_config.json`` (read by
``model.generate(...)`` in the seed's snippets), with the tokenizer's pad/bos/eos ids.

The defaults: temperature 1.0 samples the model's own distribution; top-p 0.95 cuts the
long tail of unlikely ids, where wrong notes live; no top-k, because the same k means very
different things for a 425-token MMM vocabulary and a 20,000-id BPE one; at most 512 new ids
(the seed's continuation length). midilm's sampler also masks ids the grammar forbids, so
syntax does not depend on these. The BPE paper's generation test used temperature 2.5,
top-k 15, top-p 0.95 to measure diversity; pass those explicitly to reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from midilm.config import FrozenConfig
from midilm.errors import ConfigError

if TYPE_CHECKING:
    from transformers import GenerationConfig

__all__ = ["GenerationDefaults"]


@dataclass(frozen=True)
class GenerationDefaults(FrozenConfig):
    """Sampling defaults. ``temperature=0`` means greedy (always the most likely id);
    ``top_k=None`` and ``top_p=None`` switch those filters off. ``instruments`` and
    ``bars`` are what ``generate()`` composes when not told (MMM models; GM names or
    numbers; empty: one piano). ``voice_leading``: MMM sampling keeps four-part voice
    leading (no parallel fifths or octaves, voices in range; see
    :mod:`midilm.sampling.voice_leading`), for a model of chorale-like parts."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = 0.95
    max_new_tokens: int = 512
    instruments: tuple[str, ...] = ()
    bars: int = 8
    voice_leading: bool = False

    def _validate(self) -> None:
        name = type(self).__name__
        if self.temperature < 0:
            raise ConfigError(f"{name}.temperature must be ≥ 0, received {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"{name}.top_k must be ≥ 1 or None, received {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{name}.top_p must be in (0, 1] or None, received {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"{name}.max_new_tokens must be ≥ 1, received {self.max_new_tokens}")
        if self.bars < 1:
            raise ConfigError(f"{name}.bars must be ≥ 1, received {self.bars}")
        if not isinstance(self.voice_leading, bool):
            raise ConfigError(f"{name}.voice_leading must be true or false, received "
                              f"{self.voice_leading!r}")  # fmt: skip

    def to_generation_config(
        self,
        *,
        pad_id: int | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
    ) -> GenerationConfig:
        """The same settings as a Hugging Face ``GenerationConfig`` (for ``generate``)."""
        from transformers import GenerationConfig

        settings: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": pad_id,
            "bos_token_id": bos_id,
            "eos_token_id": eos_id,
        }
        if self.temperature > 0:
            settings.update(
                do_sample=True,
                temperature=self.temperature,
                top_k=self.top_k or 0,  # 0: no top-k filter
                top_p=1.0 if self.top_p is None else self.top_p,
            )
        else:
            settings["do_sample"] = False
        if self.voice_leading:  # midilm's own setting; Transformers keeps and ignores it
            settings["voice_leading"] = True
        return GenerationConfig(**settings)

    @classmethod
    def from_generation_config(cls, data: dict[str, Any]) -> GenerationDefaults:
        """Read the JSON of a (published) ``generation_config.json``: the settings it
        writes, midilm's defaults for the others. Read as JSON rather than through
        ``GenerationConfig``, whose unset fields read as Hugging Face's own defaults
        (greedy, top-k 50) in some versions."""
        defaults = cls()
        if data.get("do_sample") is False:
            temperature = 0.0
        else:
            temperature = data.get("temperature")
            temperature = defaults.temperature if temperature is None else temperature
        top_p = data.get("top_p", defaults.top_p)
        voice_leading = data.get("voice_leading", defaults.voice_leading)
        try:
            return cls(
                temperature=float(temperature),
                top_k=data.get("top_k") or None,
                top_p=None if top_p is not None and top_p >= 1.0 else top_p,
                max_new_tokens=data.get("max_new_tokens") or defaults.max_new_tokens,
                voice_leading=voice_leading,
            )
        except TypeError as err:  # a number that is not one (a string, a list…)
            raise ConfigError(f"generation settings: {err}") from err
