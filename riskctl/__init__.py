"""riskctl: a real-time risk-control engine.

The pure core lives in :mod:`riskctl.core` (rules, expressions, features, patterns, decisions) and imports no
framework. :mod:`riskctl.flink` runs it inside PyFlink; :mod:`riskctl.stack` runs the local Kafka, MariaDB and
Flink services; :mod:`riskctl.cli` is the ``riskctl`` command.
"""

__version__ = "0.1.0"
