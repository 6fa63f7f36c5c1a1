"""`python -m bench.untuned_server ARGS`: the real server without its garbage-collector tuning (gc.freeze() and the
raised thresholds of server/__main__.py), the other side of the gc-tuning benchmark's comparison."""

import gc
import sys


def main() -> None:
    gc.freeze = lambda: None
    gc.set_threshold = lambda *thresholds: None
    from server.__main__ import main as serve

    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
