"""Sub-commands of the ``spnir`` command line (see :mod:`spnir.cli`)."""
