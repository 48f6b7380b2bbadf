"""The pure core: the engine and what it runs on, importing no framework (docs/engine.md).

Its hot modules may load compiled by mypyc, only when ``RISKCTL_NATIVE_CORE`` names a fresh build
(:mod:`riskctl.core.native`); otherwise, and by default, everything is the pure-Python source.
"""

from pathlib import Path

from riskctl.core.native import enable_from_env

enable_from_env(__path__, Path(__file__).parent)
