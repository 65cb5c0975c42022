"""A loaded model: the network, its tokenizer, and what its directory says about it.

:func:`midilm.load_model` returns a :class:`MusicModel`. It holds what the sampling tasks
need (the Hugging Face model in eval mode on its device, the tokenizer, the generation
defaults, the ``midilm.json`` facts) and knows nothing about files: loading is in
:mod:`midilm.model.loading`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from midilm.model.generation import GenerationDefaults

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from midilm.tokenization.base import Tokenizer

__all__ = ["MusicModel"]


class MusicModel:
    """A GPT-2 of symbolic music with its tokenizer.

    Attributes: ``model`` (the Hugging Face model, eval mode), ``tokenizer`` (an
    :class:`~midilm.MMMTokenizer` or :class:`~midilm.REMITokenizer`), ``info`` (the
    directory's ``midilm.json``: ``{}`` for a published checkpoint), ``generation`` (the
    :class:`GenerationDefaults` to sample with), ``directory`` (where it was loaded from,
    or ``None``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Tokenizer,
        *,
        info: dict[str, Any] | None = None,
        generation: GenerationDefaults | None = None,
        directory: str | Path | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info: dict[str, Any] = dict(info or {})
        self.generation = generation if generation is not None else GenerationDefaults()
        self.directory = Path(directory) if directory is not None else None

    @property
    def kind(self) -> str:
        """The token language: ``"mmm"`` or ``"remi"``."""
        return self.tokenizer.kind

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    @property
    def context_tokens(self) -> int:
        """The longest sequence the model reads (its position embeddings)."""
        config = self.model.config
        return int(getattr(config, "n_positions", None) or config.max_position_embeddings)

    def __repr__(self) -> str:
        config = self.model.config
        shape = ""
        if getattr(config, "n_layer", None) and getattr(config, "n_embd", None):
            shape = f"{config.n_layer} layers × {config.n_embd} dims, "
        where = f"{self.directory.name!r}, " if self.directory is not None else ""
        dtype = str(self.dtype).removeprefix("torch.")
        return (
            f"MusicModel({self.kind}, {where}{shape}{self.num_parameters / 1e6:.1f}M "
            f"parameters, {self.tokenizer.vocab_size}-token vocabulary, "
            f"{self.device.type} {dtype})"
        )
