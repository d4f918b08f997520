"""What the absl launchers share: flag parsing that names a mistyped config field, and user errors
printed as one line.

    cli.run(main)   # instead of app.run(main)

A `UserError` (bad config field, missing file, diverged training) prints `error: <message>` on
stderr and exits with status 1; `--verbosity=1` (or higher) shows its traceback. Other exceptions
are bugs and keep their traceback.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from taba_jax import distributed
from taba_jax.errors import UserError

FLAGS = flags.FLAGS


def define_job_flags(config_help: str, workdir_help: str):
    """The flags of every job launcher: --config (a config file whose fields --config.<field>
    overrides), --workdir, and the multi-process flags (taba_jax.distributed); returns their holders."""
    config = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, workdir_help)
    multiprocess = distributed.define_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    return config, workdir, multiprocess


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`path[:argument]` -> the file's get_config(argument), as config_flags loads it."""
    path, _, argument = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_launcher_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(argument) if argument else module.get_config()


def _overrides(argv: list[str]):
    """(index, flag, dotted path, value, config) of every `--<flag>.<path>=value` of a config flag."""
    configs = {}
    for index, arg in enumerate(argv[1:], 1):
        name, equals, value = arg.lstrip("-").partition("=")
        flag, _, path = name.partition(".")
        if not arg.startswith("-") or not path or not equals or flag not in FLAGS:
            continue
        if flag not in configs:
            spec = next((a.split("=", 1)[1] for a in argv[1:] if a.lstrip("-").startswith(f"{flag}=")), None)
            configs[flag] = load_config_file(spec) if spec else None
        if configs[flag] is not None:
            yield index, flag, path, value, configs[flag]


def _field(config, path: str):
    """The value at a dotted path of a ConfigDict, or the KeyError of its first missing part."""
    node, parents = config, []
    for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            fields = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; fields: {', '.join(fields)}" if fields else "")
            raise KeyError(".".join(parents), f"has no field {key!r}{hint}")
        node, parents = node[key], parents + [key]
    return node


def unknown_override(argv: list[str]) -> str | None:
    """The first override whose path names no field of its config, described with the closest
    field names; None if every override path exists."""
    for _, flag, path, _, config in _overrides(argv):
        try:
            _field(config, path)
        except KeyError as e:
            where, problem = e.args
            return f"--{flag}.{path}: {'.'.join(filter(None, (flag, where)))} {problem}"
    return None


def quote_string_tuples(argv: list[str]) -> list[str]:
    """`--config.tasks=segment,depth` on a tuple-of-strings field -> `--config.tasks=('segment', 'depth')`.

    config_flags hands such a value over as one string (`('segment,depth',)`), or refuses it when an
    item is not a Python name (`single_task:depth`); a quoted tuple literal is what it parses right.
    """
    argv = list(argv)
    for index, flag, path, value, config in _overrides(argv):
        try:
            current = _field(config, path)
        except KeyError:
            continue
        if (isinstance(current, tuple) and current and all(isinstance(v, str) for v in current)
                and not value.lstrip().startswith(("(", "["))):
            items = tuple(v.strip() for v in value.split(",") if v.strip())
            argv[index] = f"--{flag}.{path}={items!r}"
    return argv


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with tuple-of-strings overrides quoted and one clear line for an override
    of a field the config does not have."""
    try:
        return FLAGS(quote_string_tuples(argv))
    except flags.Error as e:
        _fail(str(e))
    except (KeyError, AttributeError) as e:  # config_flags fails this way on an unknown field
        _fail(unknown_override(argv) or f"bad config override: {e}")


def run(main) -> None:
    """`app.run(main)` with the launchers' conventions (see the module docstring)."""
    def wrapped(argv):
        verbose = FLAGS["verbosity"].present and FLAGS.verbosity >= 1
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
        try:
            main(argv)
        except UserError as e:
            if verbose:
                raise
            _fail(str(e))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(wrapped, flags_parser=parse_flags)
