"""The ``midilm`` command group and the one place where failures become exit codes.

Every expected failure ends the same way: one line ``error: <message>`` on stderr and exit
code 2. Expected failures are click's usage errors (an unknown option, a missing argument),
:class:`~midilm.errors.MidilmError` (bad MIDI, unknown tokens, settings a score does not
fit) and :class:`OSError` (a missing file, a folder where a file was expected, no
permission). Ctrl-C prints ``error: interrupted`` and exits 130. Anything else is a bug and
keeps its traceback.

The policy lives in :meth:`MidilmGroup.main`, so the console script (:func:`main`) and
``click.testing.CliRunner().invoke(cli, …)`` behave identically. Callers that want click's
raw exceptions pass ``standalone_mode=False``.

Importing this module loads click and :mod:`midilm.errors` only: each command imports the
heavy libraries (symusic, MidiTok, music21, later torch) when it runs, so ``midilm --help``
answers at once. To add a command, write ``midilm/cli/<name>.py`` with one click command and
register it at the bottom of this file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from midilm import __version__
from midilm.cli import dataset_info, info, prepare, tokenize
from midilm.cli import evaluate as evaluate_cmd
from midilm.cli import generate as generate_cmd
from midilm.cli import render as render_cmd
from midilm.cli import serve as serve_cmd
from midilm.cli import train as train_cmd
from midilm.errors import MidilmError

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "MidilmGroup", "cli", "main"]

EXIT_ERROR = 2  # every expected failure (usage, bad input, missing file)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class MidilmGroup(click.Group):
    """A click group whose standalone mode reports failures as ``error: …`` lines."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(
                args, prog_name or "midilm", complete_var, standalone_mode=False, **extra
            )
        except _NoArgsIsHelpError as err:  # `midilm` alone: the help, as click prints it
            err.show()
            sys.exit(EXIT_ERROR)
        except click.UsageError as err:
            _fail(_usage_message(err))
        except click.Abort as err:
            if isinstance(err.__cause__, KeyboardInterrupt):
                _fail("interrupted", EXIT_INTERRUPTED)
            _fail("aborted")
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except click.ClickException as err:
            _fail(err.format_message())
        except MidilmError as err:
            _fail(str(err))
        except BrokenPipeError:
            _quiet_broken_pipe()
        except OSError as err:
            _fail(_os_message(err))
        # Without standalone mode click returns the code of an explicit exit (--help,
        # --version: 0) or the command's return value (None: success).
        sys.exit(result if isinstance(result, int) else 0)


_NoArgsIsHelpError: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_NeverRaised", (click.UsageError,), {})
)


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    click.echo(f"error: {' '.join(lines) or 'failed'}", err=True)
    sys.exit(code)


def _usage_message(err: click.UsageError) -> str:
    """``No such option: --foo`` → ``no such option: --foo (see 'midilm tokenize --help')``."""
    message = err.format_message().strip().removesuffix(".")
    if len(message) > 1 and message[0].isupper() and not message[1].isupper():
        message = message[0].lower() + message[1:]  # keep "MIDI …" as it is
    ctx = err.ctx
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


def _os_message(err: OSError) -> str:
    """``[Errno 2] No such file or directory: 'x'`` → ``x: no such file or directory``."""
    if err.strerror is None or err.filename is None:
        return str(err)  # raised with a message of its own
    reason = err.strerror[0].lower() + err.strerror[1:]
    target = os.fsdecode(err.filename)
    if err.filename2 is not None:
        target += f" → {os.fsdecode(err.filename2)}"
    return f"{target}: {reason}"


def _quiet_broken_pipe() -> NoReturn:
    """The reader went away (``midilm tokenize … | head``): stop without a message, and
    without Python complaining again when it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


@click.group(name="midilm", cls=MidilmGroup)
@click.version_option(__version__, "--version", prog_name="midilm", message="%(prog)s %(version)s")
def cli() -> None:
    """Train and run GPT-2 language models on symbolic music.

    Bars and tracks are numbered from 1. Errors are reported as one line starting with
    'error:' on stderr, with exit code 2.
    """


cli.add_command(info.info)
cli.add_command(tokenize.tokenize)
cli.add_command(tokenize.detokenize)
cli.add_command(prepare.prepare)
cli.add_command(dataset_info.dataset_info)
cli.add_command(train_cmd.train)
cli.add_command(generate_cmd.generate)
cli.add_command(generate_cmd.infill)
cli.add_command(generate_cmd.add_track)
cli.add_command(generate_cmd.regenerate_track)
cli.add_command(serve_cmd.serve)
cli.add_command(evaluate_cmd.evaluate)
cli.add_command(evaluate_cmd.compare)
cli.add_command(render_cmd.render)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``midilm`` console script: runs the group and exits with its code
    (0, 2 for an expected failure, 130 on Ctrl-C)."""
    cli.main(args, prog_name="midilm")
