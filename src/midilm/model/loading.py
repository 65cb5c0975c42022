"""``midilm.load_model``: a model directory from disk, never from the network.

Three layouts load:

* a **midilm model directory** (:mod:`midilm.model.directory`): ``midilm.json`` names the
  tokenizer and the generation defaults;
* a **"GPT-2 for Music" checkpoint**: ``config.json``, weights (``model.safetensors`` or
  ``pytorch_model.bin``) and a Hugging Face WordLevel ``tokenizer.json``, no ``midilm.json``:
  MMM text, with the settings read off the vocabulary (:meth:`MMMTokenizer.load`);
* a **"Maestro-REMI-bpe20k" checkpoint**: ``config.json``, weights and MidiTok 2's
  ``tokenizer.conf``, converted with the id of every token kept
  (:meth:`REMITokenizer.from_miditok2`).

``load_model()`` with no path loads the default bundled model, and ``"bundled:NAME"`` a
named one: model directories shipped inside the package under ``midilm/bundled/NAME/``.

A missing file raises ``FileNotFoundError`` naming it; files that do not belong together
(a vocabulary whose size is not the number of embedding rows, an unknown tokenizer) raise
:class:`~midilm.errors.TokenizerMismatchError` naming them. Nothing is downloaded: a path
that does not exist is an error, not a Hub id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

from midilm.errors import ConfigError, TokenizerMismatchError
from midilm.io_utils import read_json_object
from midilm.model.directory import (
    CONFIG_JSON,
    GENERATION_CONFIG_JSON,
    WEIGHTS_FILES,
    quiet_transformers,
)
from midilm.model.generation import GenerationDefaults
from midilm.model.music_model import MusicModel
from midilm.tokenization.base import MIDILM_JSON, TOKENIZER_JSON, read_midilm_json

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from midilm.sampling.engine import GPT2Engine

__all__ = [
    "BUNDLED_DEFAULT",
    "BUNDLED_PREFIX",
    "bundled_model_dir",
    "bundled_models",
    "load_model",
    "resolve_model_path",
]

BUNDLED_PREFIX = "bundled:"
#: The folder under ``midilm/bundled/`` that ``load_model()`` loads.
BUNDLED_DEFAULT = "default"
_BUNDLED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DTYPES = ("float32", "float16", "bfloat16")


def _bundled_root() -> Path:
    return Path(__file__).resolve().parent.parent / "bundled"


def bundled_models() -> list[str]:
    """Names of the model directories shipped with this midilm (sorted; maybe none)."""
    root = _bundled_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_JSON).is_file())


def bundled_model_dir(name: str = BUNDLED_DEFAULT) -> Path:
    """The folder of a bundled model; ``FileNotFoundError`` when it is not installed."""
    if not isinstance(name, str) or not _BUNDLED_NAME.match(name):
        raise ValueError(
            f"bundled model names are letters, digits, '.', '_' and '-', received {name!r}"
        )
    folder = _bundled_root() / name
    if not (folder / CONFIG_JSON).is_file():
        available = bundled_models()
        have = (
            f"bundled models: {', '.join(available)}"
            if available
            else "this midilm installation ships none"
        )
        raise FileNotFoundError(
            f"no bundled model {name!r} is installed (looked in {folder}; {have}); "
            f"pass a model directory instead: load_model('path/to/model')"
        )
    return folder


def resolve_model_path(path: str | Path | None = None) -> Path:
    """The directory a model spec names: ``None`` (the default bundled model),
    ``"bundled:NAME"``, or a path to an existing directory."""
    if path is None:
        return bundled_model_dir()
    if isinstance(path, str) and path.startswith(BUNDLED_PREFIX):
        return bundled_model_dir(path[len(BUNDLED_PREFIX) :])
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a str or Path, received {type(path).__name__}")
    directory = Path(path).expanduser()
    if not directory.exists():
        raise FileNotFoundError(
            f"{directory}: no such model directory (midilm loads models from disk only; "
            f"it never downloads)"
        )
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory}: a model is a directory, not a file")
    return directory


def load_model(
    path: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> MusicModel:
    """Load a model directory (see the module docstring for the layouts it reads).

    ``device``: where the model runs (default: the GPU when torch sees one, else the CPU).
    ``dtype``: the weights' precision in memory, ``"float32"`` (the default: every CPU op
    has it), ``"float16"``, ``"bfloat16"``, or ``"auto"`` for the stored precision.
    """
    directory = resolve_model_path(path)
    config = _read_config(directory)
    _find_weights(directory)

    from midilm.tokenization.base import load_tokenizer

    tokenizer = load_tokenizer(directory)
    rows = config.get("vocab_size")
    if rows != tokenizer.vocab_size:
        raise TokenizerMismatchError(
            f"{_tokenizer_file(directory)} has {tokenizer.vocab_size} tokens but "
            f"{directory / CONFIG_JSON} gives the model {rows} embedding rows (vocab_size)"
        )

    import torch

    torch_dtype = _torch_dtype(dtype)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"

    def network() -> PreTrainedModel:
        import transformers
        from transformers import AutoModelForCausalLM

        # Transformers 5 calls it `dtype`, 4.x `torch_dtype`.
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                directory, local_files_only=True, **{key: torch_dtype}
            )
        model.to(device)
        return model.eval()

    weights = _find_weights(directory)
    engine = None
    if weights.name == "model.safetensors" and config.get("model_type", "gpt2") == "gpt2":

        def engine() -> GPT2Engine:
            return _engine_from_safetensors(config, weights, device)

    info = read_midilm_json(directory)
    return MusicModel(
        network,
        tokenizer,
        info=info,
        generation=_generation_defaults(directory, info),
        directory=directory,
        weights=engine,
        config=config,
    )


class _StoredGPT2:
    """What :class:`~midilm.sampling.engine.GPT2Engine` reads of a GPT-2 (its
    configuration and tensors), straight from ``config.json`` and the safetensors file:
    sampling then never imports Transformers, which takes seconds to import."""

    _DEFAULTS: ClassVar[dict[str, Any]] = {
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "n_inner": None,
    }

    def __init__(self, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
        self.config = SimpleNamespace(**{**self._DEFAULTS, **config})
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(self._state.values())


def _engine_from_safetensors(
    config: dict[str, Any], weights: Path, device: str | torch.device
) -> GPT2Engine:
    from safetensors.torch import load_file

    from midilm.sampling.engine import GPT2Engine

    state = load_file(str(weights), device=str(device))
    return GPT2Engine(_StoredGPT2(config, state))  # type: ignore[arg-type]


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model configuration in this directory")
    config = read_json_object(path, ConfigError)
    if not isinstance(config.get("vocab_size"), int):
        raise ConfigError(f"{path}: not a model configuration (no integer 'vocab_size')")
    return config


def _find_weights(directory: Path) -> Path:
    for name in WEIGHTS_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"{directory / WEIGHTS_FILES[0]}: no model weights in this directory "
        f"(looked for {', '.join(WEIGHTS_FILES)})"
    )


def _tokenizer_file(directory: Path) -> Path:
    json_path = directory / TOKENIZER_JSON
    conf_path = directory / "tokenizer.conf"
    return conf_path if not json_path.is_file() and conf_path.is_file() else json_path


def _torch_dtype(dtype: str | torch.dtype | None) -> str | torch.dtype:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype: expected a floating-point dtype, received {dtype}")
        return dtype
    if dtype == "auto":
        return "auto"
    if dtype in _DTYPES:
        return getattr(torch, dtype)
    raise ConfigError(f"dtype: expected one of auto, {', '.join(_DTYPES)}, received {dtype!r}")


def _generation_defaults(directory: Path, info: dict[str, Any]) -> GenerationDefaults:
    """From ``midilm.json``, else a published ``generation_config.json``, else midilm's."""
    if "generation" in info:
        try:
            return GenerationDefaults.from_dict(info["generation"])
        except ConfigError as err:
            raise ConfigError(f"{directory / MIDILM_JSON}: {err}") from err
    path = directory / GENERATION_CONFIG_JSON
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ConfigError("expected a JSON object")
            return GenerationDefaults.from_generation_config(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ConfigError) as err:
            raise ConfigError(f"{path}: {err}") from err
    return GenerationDefaults()
