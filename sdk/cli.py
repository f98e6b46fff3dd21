"""``semedge`` command line: a thin dispatcher over :mod:`sdk.commands`.

Every module in :mod:`sdk.commands` is discovered automatically; each exposes
``register(subparsers)`` and keeps its heavy imports inside the handler, so
``semedge --help`` is instant and ``semedge agent`` never imports torch.
A command may also set ``on_interrupt(args, argv) -> str`` (how to continue after
Ctrl-C). Every :class:`~sdk.errors.SemedgeError` becomes one line on stderr and a
non-zero exit, never a traceback. Anything else that escapes a command is a bug in
semedge: it is reported as one "internal error" line too (``SEMEDGE_DEBUG=1`` shows
the traceback), and the bad-input tests fail on it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from sdk import __version__, commands
from sdk.errors import SemedgeError, missing
from sdk.options import Parser


def command_modules() -> list[str]:
    """Names of the subcommand modules, in alphabetical order."""
    return sorted(f"sdk.commands.{m.name}" for m in pkgutil.iter_modules(commands.__path__))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="semedge",
        description="Train, adapt, export, build and flash semantic-communication transceivers.",
    )
    parser.add_argument("--version", action="version", version=f"semedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SemedgeError as exc:
        print(f"semedge {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:  # an extra this machine did not install
        error = missing(
            str(exc.name), f"semedge {args.command}",
            "install the extra it belongs to: pip install 'semedge[train]' on a workstation, "
            "'semedge[agent]' on a device (docs/deploy.md, Installing)",
        )  # fmt: skip
        print(f"semedge {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as exc:  # a path, permission or full disk that no specific check caught
        print(
            f"semedge {args.command}: error: {exc}; check the path, its permissions and the "
            "free space",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        hint = getattr(args, "on_interrupt", None)  # a command may say how to continue
        said = f"; {hint(args, argv)}" if hint else ""
        print(f"semedge {args.command}: interrupted{said}", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("SEMEDGE_DEBUG"):
            raise
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        print(
            f"semedge {args.command}: internal error: {type(exc).__name__}: {reason} — please "
            "report it (SEMEDGE_DEBUG=1 shows where)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
