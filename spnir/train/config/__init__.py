"""Training configuration: the schema with its defaults, validation, ``--set`` overrides, ``${VAR}`` paths.

A config is a nested dict (YAML on disk). :func:`load_config` reads a file (spnir's own format or a
BasicSR-style option file, see :mod:`spnir.train.basicsr`), applies ``--set key=value`` overrides and
returns the validated config with every default filled in. Validation runs before any work starts:
an unknown key names its near match, a wrong type or range says what was expected.

Modules: :mod:`.schema` (every key: type, default, choices; the check against it), :mod:`.rules` (rules across
keys, and the owners' validators called with the config key), :mod:`.load` (files, ``base:``, overrides,
:func:`validate`), :mod:`.paths` (``${VAR}`` paths). Types are converted by :mod:`spnir.coerce`, the engine the
model-argument checks share.
"""
from spnir.train.config.load import apply_override, dump_config, load_config, validate
from spnir.train.config.paths import expand_path, referenced_variables
from spnir.train.config.rules import check_runnable, import_factory
from spnir.train.config.schema import SCHEMA, Config

__all__ = ["Config", "SCHEMA", "apply_override", "check_runnable", "dump_config", "expand_path",
           "import_factory", "load_config", "referenced_variables", "validate"]
