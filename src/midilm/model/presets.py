"""Named model shapes: the two seed architectures, a CPU-sized one, and a test-sized one.

A preset fixes the GPT-2 architecture; the vocabulary size and special ids come from the
tokenizer. Any field can be overridden: ``get_preset("mmm-gpt2", n_layer=4)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from midilm.config import FrozenConfig
from midilm.errors import ConfigError

if TYPE_CHECKING:
    from transformers import GPT2Config

__all__ = ["PRESETS", "ModelPreset", "get_preset"]


@dataclass(frozen=True)
class ModelPreset(FrozenConfig):
    """A GPT-2 shape. ``n_inner=None`` means GPT-2's 4 × ``n_embd``.

    ``dropout`` applies to the embeddings and residual branches (GPT-2's 0.1).
    ``attn_dropout`` (on the attention probabilities) is 0 by default, as in most recent
    GPT recipes: with it, PyTorch's fused CPU attention kernel cannot be used and a bf16
    training step on CPU runs about 1.25× slower (``benchmarks/train.py``). Set it to 0.1
    for GPT-2's original regularisation."""

    name: str
    description: str
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int
    n_inner: int | None = None
    dropout: float = 0.1
    attn_dropout: float = 0.0

    def _validate(self) -> None:
        for field in ("n_layer", "n_head", "n_embd", "n_positions"):
            if getattr(self, field) < 1:
                raise ConfigError(
                    f"ModelPreset.{field} must be ≥ 1, received {getattr(self, field)}"
                )
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"ModelPreset.n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})"
            )
        if self.n_inner is not None and self.n_inner < 1:
            raise ConfigError(f"ModelPreset.n_inner must be ≥ 1, received {self.n_inner}")
        for field in ("dropout", "attn_dropout"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"ModelPreset.{field} must be in [0, 1), received {value}")

    def gpt2_config(
        self,
        vocab_size: int,
        *,
        pad_id: int | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
    ) -> GPT2Config:
        """The Hugging Face configuration of this shape for a vocabulary."""
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=self.n_positions,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_inner=self.n_inner,
            resid_pdrop=self.dropout,
            embd_pdrop=self.dropout,
            attn_pdrop=self.attn_dropout,
            pad_token_id=pad_id,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
        )


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name="mmm-gpt2",
            description='The "GPT-2 for Music" models: 6 layers, 8 heads, 512 dims, context 2048.',
            n_layer=6, n_head=8, n_embd=512, n_positions=2048,
        ),
        ModelPreset(
            name="remi-gpt2",
            description="The BPE paper's model (Maestro-REMI-bpe20k): 12 layers, 8 heads, "
            "512 dims, FFN 2048, context 2048.",
            n_layer=12, n_head=8, n_embd=512, n_positions=2048, n_inner=2048,
        ),
        ModelPreset(
            name="small",
            description="Trains to a useful state on 2 CPU cores in about an hour on the "
            "chorales: 4 layers, 4 heads, 256 dims, context 1024.",
            n_layer=4, n_head=4, n_embd=256, n_positions=1024,
        ),
        ModelPreset(
            name="tiny",
            description="For tests: 2 layers, 2 heads, 32 dims, context 512.",
            n_layer=2, n_head=2, n_embd=32, n_positions=512, dropout=0.0,
        ),
    )
}  # fmt: skip


def get_preset(name: str, **overrides: Any) -> ModelPreset:
    """A preset by name, with any fields overridden."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None
    return preset.replace(**overrides) if overrides else preset
