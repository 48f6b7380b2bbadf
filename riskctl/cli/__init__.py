"""The ``riskctl`` command line: one module per command group, registered in :mod:`riskctl.cli.main`."""
