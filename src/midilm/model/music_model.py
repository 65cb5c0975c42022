"""A loaded model: the network, its tokenizer, and what its directory says about it.

:func:`midilm.load_model` returns a :class:`MusicModel`. It holds what the sampling tasks
need (the Hugging Face model in eval mode on its device, the tokenizer, the generation
defaults, the ``midilm.json`` facts) and knows nothing about files: loading is in
:mod:`midilm.model.loading`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midilm.model.generation import GenerationDefaults

if TYPE_CHECKING:
    import torch
    from symusic.core import ScoreTick
    from transformers import PreTrainedModel

    from midilm.sampling.engine import GPT2Engine
    from midilm.sampling.tasks import GenerationEvent, ScoreInput
    from midilm.tokenization.base import Tokenizer

Instrument = int | str
Density = int | str | None

__all__ = ["MusicModel"]


class MusicModel:
    """A GPT-2 of symbolic music with its tokenizer.

    Attributes: ``model`` (the Hugging Face model, eval mode), ``tokenizer`` (an
    :class:`~midilm.MMMTokenizer` or :class:`~midilm.REMITokenizer`), ``info`` (the
    directory's ``midilm.json``: ``{}`` for a published checkpoint), ``generation`` (the
    :class:`GenerationDefaults` to sample with), ``directory`` (where it was loaded from,
    or ``None``).

    Sampling methods (:meth:`generate`, :meth:`infill`, :meth:`add_track`,
    :meth:`regenerate_track`) return a ``symusic.Score``, or a list when ``num_samples``
    > 1, and take the sampling keywords ``temperature``, ``top_k``, ``top_p`` (default:
    :attr:`generation`), ``seed`` (same seed, same music), ``num_samples``,
    ``constrained`` (``False`` switches the grammar mask off, for research) and
    ``voice_leading`` (MMM: no parallel fifths or octaves, four voices in range; default
    :attr:`generation`, see :mod:`midilm.sampling.voice_leading`). Indices of
    tracks and bars start at 0. Bad arguments raise
    :class:`~midilm.errors.GenerationRequestError` before any sampling.
    """

    def __init__(
        self,
        model: PreTrainedModel | Callable[[], PreTrainedModel],
        tokenizer: Tokenizer,
        *,
        info: dict[str, Any] | None = None,
        generation: GenerationDefaults | None = None,
        directory: str | Path | None = None,
        weights: Callable[[], GPT2Engine] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        # ``model`` may be a loader: the Hugging Face network is built on first use of
        # :attr:`model`, while sampling runs on :attr:`engine`, which ``weights`` builds
        # straight from the weights file (importing Transformers costs seconds).
        if callable(model) and not hasattr(model, "config"):
            self._model: PreTrainedModel | None = None
            self._load_model: Callable[[], PreTrainedModel] | None = model
        else:
            self._model, self._load_model = model, None  # type: ignore[assignment]
        self.tokenizer = tokenizer
        self.info: dict[str, Any] = dict(info or {})
        self.generation = generation if generation is not None else GenerationDefaults()
        self.directory = Path(directory) if directory is not None else None
        self._engine: GPT2Engine | None = None
        self._engine_loader = weights
        self._config = dict(config) if config is not None else None

    @property
    def model(self) -> PreTrainedModel:
        """The Hugging Face model (eval mode), loaded on first use."""
        if self._model is None:
            assert self._load_model is not None
            self._model = self._load_model()
        return self._model

    @property
    def config(self) -> dict[str, Any]:
        """The network's configuration (``config.json``)."""
        if self._config is None:
            self._config = self.model.config.to_dict()
        return self._config

    @property
    def kind(self) -> str:
        """The token language: ``"mmm"`` or ``"remi"``."""
        return self.tokenizer.kind

    @property
    def device(self) -> torch.device:
        if self._model is None:
            return self.engine.device
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
        config = self.config
        return int(config.get("n_positions") or config["max_position_embeddings"])

    @property
    def engine(self) -> GPT2Engine:
        """The lean inference engine over this model's weights (built on first use; call
        :meth:`refresh` after changing the weights)."""
        if self._engine is None:
            from midilm.sampling.engine import GPT2Engine

            if self._model is None and self._engine_loader is not None:
                self._engine = self._engine_loader()
            else:
                self._engine = GPT2Engine(self.model)
        return self._engine

    def refresh(self) -> None:
        """Forget the engine's copy of the weights (after training or editing them)."""
        self._engine = None
        self._engine_loader = None

    @property
    def supports_infill(self) -> bool:
        """Whether the model learnt bar infilling: its dataset had infill examples (a
        published checkpoint without ``midilm.json``: its vocabulary has the infill tokens)."""
        if self.kind != "mmm":
            return False
        settings = self.info.get("dataset", {}).get("settings")
        if isinstance(settings, dict) and "infill_share" in settings:
            return bool(settings["infill_share"])
        return "FILL_START" in self.tokenizer.vocab.index  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ sampling
    def generate(
        self,
        *,
        bars: int | None = None,
        prompt: ScoreInput | None = None,
        instruments: Sequence[Instrument] | Instrument | None = None,
        density: Sequence[Density] | Density = None,
        meter: str | None = None,
        tempo: float | None = None,
        **sampling: Any,
    ) -> ScoreTick | list[ScoreTick]:
        """Compose ``bars`` bars (default :attr:`generation`) for ``instruments`` (GM
        numbers or names; ``"drums"``) at ``density`` (per track or one for all: a bin or
        ``"low" | "medium" | "high"``), or, with a ``prompt`` (a Score or a MIDI path),
        continue it by ``bars`` bars; its tempo, meters, names and programs stay."""
        return self._run("generate", bars=bars, prompt=prompt, instruments=instruments,
                         density=density, meter=meter, tempo=tempo, **sampling)  # fmt: skip

    def infill(
        self,
        score: ScoreInput,
        *,
        track: int | Sequence[int],
        bars: int | Sequence[int],
        **sampling: Any,
    ) -> ScoreTick | list[ScoreTick]:
        """Write the chosen bars of the chosen tracks anew; every other note is unchanged.
        Needs a model trained with infill examples (:attr:`supports_infill`)."""
        return self._run("infill", score, track=track, bars=bars, **sampling)

    def add_track(
        self, score: ScoreInput, *, instrument: Instrument, density: Density = None, **sampling: Any
    ) -> ScoreTick | list[ScoreTick]:
        """The score with a new part for ``instrument`` that fits the existing ones."""
        return self._run("add_track", score, instrument=instrument, density=density, **sampling)

    def regenerate_track(
        self, score: ScoreInput, *, track: int, density: Density = None, **sampling: Any
    ) -> ScoreTick | list[ScoreTick]:
        """The score with track ``track`` written anew against the others (same name and
        program; density: as busy as it was unless given)."""
        return self._run("regenerate_track", score, track=track, density=density, **sampling)

    def stream(self, task: str, /, *args: Any, **arguments: Any) -> Iterator[GenerationEvent]:
        """A task as events: one per finished bar (with the scores so far), then one
        ``"done"`` with the results and token text. The request is checked at once;
        sampling runs as the iterator is consumed, and stopping early stops it."""
        from midilm.sampling.tasks import stream

        if args:
            arguments["score"] = args[0] if len(args) == 1 else args
        return stream(self, task, **arguments)

    def _run(self, task: str, *args: Any, **arguments: Any) -> ScoreTick | list[ScoreTick]:
        *_, last = self.stream(task, *args, **arguments)
        assert last.result is not None
        return last.result if len(last.result) > 1 else last.result[0]

    def capabilities(self) -> dict[str, Any]:
        """What this model can do, for a user interface: its instruments, density bins,
        bars per window, meters, and whether it can fill bars."""
        from midilm.sampling.arguments import MAX_BARS
        from midilm.score.gm import program_name

        if self.kind != "mmm":
            instruments = [{"program": 0, "name": program_name(0)}]
            return {
                "kind": self.kind, "bars_per_window": None, "density_bins": None,
                "instruments": instruments, "infill": False, "meters": ["4/4"],
                "max_bars": MAX_BARS, "context_tokens": self.context_tokens,
                "tasks": ["generate"],
            }  # fmt: skip
        tok = self.tokenizer
        config = tok.config  # type: ignore[attr-defined]
        inst = tok.vocab.inst  # type: ignore[attr-defined]
        instruments = [
            {"program": p, "name": program_name(min(p, 127), p == 128)}
            for p in range(len(inst)) if inst[p] >= 0
        ]  # fmt: skip
        tasks = ["generate", "add_track", "regenerate_track"]
        if self.supports_infill:
            tasks.insert(1, "infill")
        return {
            "kind": self.kind,
            "bars_per_window": config.bars_per_window,
            "density_bins": config.density_bins,
            "instruments": instruments,
            "infill": self.supports_infill,
            "meters": list(config.meters or ("4/4",)),
            "max_bars": MAX_BARS,
            "context_tokens": self.context_tokens,
            "tasks": tasks,
        }

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
