"""`python -m bench [NAME] [--quick]`: tables on stdout, JSON in bench/results/.

NAME: overhead, server, balancers, shortener or overload; none runs them all.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from bench import balancers, mesh_overhead, overload, server_cost, shortener

BENCHMARKS: dict[str, Callable[[bool], None]] = {
    "overhead": mesh_overhead.run,
    "server": server_cost.run,
    "balancers": balancers.run,
    "shortener": shortener.run,
    "overload": overload.run,
}


def _interrupt(signum: int, frame: object) -> None:
    # A CI timeout or `kill` sends SIGTERM: unwind like Ctrl-C, so the servers are stopped.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "benchmark", nargs="?", choices=sorted(BENCHMARKS), help="one benchmark; default: all"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds in all: a smoke test, not figures"
    )
    args = parser.parse_args(argv)
    names = [args.benchmark] if args.benchmark else list(BENCHMARKS)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for name in names:
            BENCHMARKS[name](args.quick)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
