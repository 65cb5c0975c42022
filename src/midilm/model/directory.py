"""Saving a model directory in the Hugging Face layout.

A model directory holds::

    config.json             the GPT-2 configuration          (Transformers)
    model.safetensors       the weights                      (Transformers)
    generation_config.json  sampling defaults and pad/bos/eos ids, for model.generate
    tokenizer.json          the vocabulary: Hugging Face WordLevel (MMM) or MidiTok 3 (REMI)
    tokenizer_config.json   (MMM only) so that AutoTokenizer.from_pretrained reads it
    midilm.json             tokenizer kind and settings, model facts, dataset digest,
                            training recipe, final metrics, generation defaults, midilm version
    README.md               the model card (:mod:`midilm.model.card`)

so the seed's own snippets load it: ``AutoModelForCausalLM.from_pretrained(dir)``, plus
``AutoTokenizer.from_pretrained(dir)`` for MMM or ``miditok.REMI(params=dir / "tokenizer.json")``
for REMI. :func:`midilm.load_model` reads it back.

:func:`save_model` writes everything into a temporary folder beside the target and renames
it into place (:func:`midilm.io_utils.atomic_directory`): a crash never leaves half a model,
and saving over an existing model replaces it whole. It does not train, unwrap
(DDP / ``torch.compile``) or move models: pass the plain ``PreTrainedModel``.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midilm.errors import ConfigError, TokenizerMismatchError, UnknownTokenError
from midilm.io_utils import atomic_directory, atomic_write_text
from midilm.model.card import render_card
from midilm.model.generation import GenerationDefaults
from midilm.tokenization.base import MIDILM_JSON, read_midilm_json, write_midilm_json

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from midilm.tokenization.base import Tokenizer

__all__ = [
    "CONFIG_JSON",
    "GENERATION_CONFIG_JSON",
    "README_MD",
    "WEIGHTS_FILES",
    "quiet_transformers",
    "save_model",
    "special_ids",
]

CONFIG_JSON = "config.json"
GENERATION_CONFIG_JSON = "generation_config.json"
README_MD = "README.md"
#: Weights a model directory may hold, preferred first (older checkpoints: pytorch_model.bin).
WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# midilm.json sections that save_model writes itself; ``info`` may not set them.
_RESERVED = ("tokenizer", "generation", "special_ids", "midilm_version")
_DTYPES = ("float32", "float16", "bfloat16")


def special_ids(tokenizer: Tokenizer) -> dict[str, int | None]:
    """``{"pad", "bos", "eos"}`` ids of a tokenizer, ``None`` where it has none.

    REMI: its ``PAD``, ``BOS``, ``EOS`` tokens. MMM: ``[PAD]``; ``PIECE_START`` opens every
    sequence, so it is the id generation starts from; ``PIECE_END`` (never in training
    data, but decoders stop at it) ends one when the vocabulary has it.
    """
    if tokenizer.kind == "remi":
        tok: Any = tokenizer
        return {"pad": tok.pad_id, "bos": tok.bos_id, "eos": tok.eos_id}

    def find(token: str) -> int | None:
        try:
            return tokenizer.token_to_id(token)
        except UnknownTokenError:
            return None

    return {"pad": find("[PAD]"), "bos": find("PIECE_START"), "eos": find("PIECE_END")}


def save_model(
    directory: str | Path,
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    *,
    generation_defaults: GenerationDefaults | None = None,
    info: Mapping[str, Any] | None = None,
    card: str | None = None,
    dtype: str | torch.dtype | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` as a model directory; return its path.

    ``info`` adds sections to ``midilm.json``, each a JSON-ready mapping or value:
    ``"model"`` (``{"preset": "small"}``; the architecture facts are added from the model's
    config), ``"dataset"`` (``{"digest": …}`` and any other facts about the data),
    ``"training"`` (the recipe), ``"metrics"`` (final values), ``"license"``,
    ``"description"``. ``card`` replaces the rendered model card. ``dtype``
    (``"float16"``, ``"bfloat16"``, ``"float32"``) stores the weights in that precision
    (``model`` itself is not changed); by default they are stored as they are.

    An existing ``directory`` is replaced whole, but only if it is empty or a model
    directory (it has ``config.json`` or ``midilm.json``): anything else raises
    ``FileExistsError``. A vocabulary whose size differs from the model's embedding raises
    :class:`TokenizerMismatchError` before anything is written.
    """
    directory = Path(directory)
    vocab_rows = int(model.get_input_embeddings().weight.shape[0])
    if tokenizer.vocab_size != vocab_rows:
        raise TokenizerMismatchError(
            f"{directory}: the {tokenizer.kind} tokenizer has {tokenizer.vocab_size} tokens "
            f"but the model's embedding has {vocab_rows} rows"
        )
    sections = _checked_info(info)
    generation = generation_defaults if generation_defaults is not None else GenerationDefaults()
    if not isinstance(generation, GenerationDefaults):
        raise TypeError(
            "generation_defaults: expected GenerationDefaults, received "
            f"{type(generation).__name__}"
        )
    if card is not None and not isinstance(card, str):
        raise TypeError(f"card: expected the text of a model card, received {type(card).__name__}")
    to_save = _in_dtype(model, dtype)
    _check_replaceable(directory)
    ids = special_ids(tokenizer)

    with atomic_directory(directory) as tmp, quiet_transformers():
        to_save.save_pretrained(tmp)
        generation.to_generation_config(
            pad_id=ids["pad"], bos_id=ids["bos"], eos_id=ids["eos"]
        ).save_pretrained(tmp)
        tokenizer.save(tmp)
        # What the saved network is (its dtype above all) wins over what a caller recorded
        # of it earlier, e.g. training's float32 when packaging in float16.
        facts = {**dict(sections.pop("model", None) or {}), **_model_facts(to_save)}
        write_midilm_json(
            tmp,
            {"model": facts, **sections, "generation": generation.to_dict(), "special_ids": ids},
        )
        text = card if card is not None else render_card(read_midilm_json(tmp), name=directory.name)
        atomic_write_text(tmp / README_MD, text if text.endswith("\n") else text + "\n")
    return directory


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide Transformers' progress bars ("Loading weights", "Writing model shards") while
    midilm saves or loads a small model: a library call should not draw on the terminal.
    The switch is global in Transformers; it is put back as it was."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _checked_info(info: Mapping[str, Any] | None) -> dict[str, Any]:
    if info is None:
        return {}
    if not isinstance(info, Mapping):
        raise TypeError(f"info: expected a mapping, received {type(info).__name__}")
    reserved = sorted(set(info) & set(_RESERVED))
    if reserved:
        raise ConfigError(
            f"info: {', '.join(reserved)} {'is' if len(reserved) == 1 else 'are'} written by "
            f"save_model itself (from the tokenizer and generation_defaults)"
        )
    if "model" in info and not isinstance(info["model"], Mapping | None):
        raise ConfigError(f"info['model']: expected a mapping, received {info['model']!r}")
    for key, value in info.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"info[{key!r}]: not JSON data ({err})") from err
    return dict(info)


def _in_dtype(model: PreTrainedModel, dtype: str | torch.dtype | None) -> PreTrainedModel:
    """``model`` itself, or a copy with its floating-point weights in ``dtype``."""
    if dtype is None:
        return model
    import torch

    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype: expected one of {', '.join(_DTYPES)}, received {dtype!r}")
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"dtype: expected a floating-point dtype, received {dtype!r}")
    if all(p.dtype == dtype for p in model.parameters()):
        return model
    return copy.deepcopy(model).to(dtype)


def _check_replaceable(directory: Path) -> None:
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise FileExistsError(f"{directory}: exists and is not a model directory")
    if directory.is_dir():
        if directory.resolve() == Path.cwd().resolve():
            raise FileExistsError(f"{directory}: will not replace the current directory")
        looks_like_model = (directory / CONFIG_JSON).is_file() or (
            directory / MIDILM_JSON
        ).is_file()
        if not looks_like_model and any(directory.iterdir()):
            raise FileExistsError(
                f"{directory}: a folder that is not a model directory (no {CONFIG_JSON} or "
                f"{MIDILM_JSON}); saving would replace it whole, so choose another path"
            )


def _model_facts(model: PreTrainedModel) -> dict[str, Any]:
    """What ``midilm.json`` and the card say about the network itself."""
    config = model.config
    facts: dict[str, Any] = {"architecture": type(model).__name__}
    for key in ("n_layer", "n_head", "n_embd", "n_inner", "n_positions", "vocab_size"):
        value = getattr(config, key, None)
        if value is not None:
            facts[key] = value
    facts["parameters"] = int(sum(p.numel() for p in model.parameters()))
    dtypes = {str(p.dtype).removeprefix("torch.") for p in model.parameters()}
    facts["dtype"] = ", ".join(sorted(dtypes))
    return facts
