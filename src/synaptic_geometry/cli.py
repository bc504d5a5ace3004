"""The ``synaptic-geometry`` command: build the book, test measured synapses for a geometry, or rerun a finetuning run."""

from __future__ import annotations

import sys

from synaptic_geometry.book.build import main as book_main
from synaptic_geometry.experiments.finetune_command import main as finetune_main
from synaptic_geometry.identify import main as identify_main

COMMANDS = {
    "book": "execute the chapters at a profile and build the HTML book (see `synaptic-geometry book --help`)",
    "identify": "which geometry makes the change between BEFORE.csv and AFTER.csv most Gaussian",
    "finetune": "run or load one deep-network finetuning run (ARCH --potential P --seed S) and score it",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; each parses its own arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print("usage: synaptic-geometry {" + ",".join(COMMANDS) + "} ...\n")
        for name, text in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "book":

        return book_main(rest)
    if command == "finetune":
        return finetune_main(rest)
    if command == "identify":

        return identify_main(rest)
    print(f"error: unknown command {command!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
