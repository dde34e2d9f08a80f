"""Subcommand modules; each has ``register(app)``. Order here is the order in ``--help``."""

COMMAND_MODULES = [
    "setup",  # init, status, config
    "pseudolabel",
    "train",
    "acquire",
    "query",
    "lcm",  # lcm-train, lcm-correct
    "answers",  # export-answers
    "evaluate",
    "rounds",  # round, run
    "demo",
    "export",
    "report",
]
