"""Builds spinejax's oneDNN convolution for this environment: python -m spinejax.native.build (./run.sh setup).

Prints one line: the library built, already there, or why it cannot be built (then exit 1; training still runs,
with XLA's convolutions). The work is in spinejax/native/library.py.
"""

import sys

from spinejax.native import library


def main() -> int:
    try:
        path, compiled = library.build()
        library.load()
    except (library.NativeUnavailable, OSError) as error:
        print(f"spinejax.native.build: {error}; CPU training falls back to XLA's convolution", file=sys.stderr)
        return 1
    print(f"spinejax.native.build: {'built' if compiled else 'up to date:'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
