"""Sub-commands of ``weldreview``, one module each.

Each module defines ``add_parser(subparsers)`` (which registers the sub-command and sets
``func=run`` as its default) and ``run(args) -> int``. Modules import only the standard library at
top level, so that ``weldreview --help`` is fast and needs neither TensorFlow nor a display; heavy
imports happen inside ``run``.
"""

COMMANDS = ("open", "scan", "train", "calibrate", "bench", "benchmark", "audit", "export", "retrain",
            "models")
