"""The web console (``riskctl console``, docs/console.md): rules, versions, edits validated by the rules'
own validator, backtests, publishing, with accounts, roles, sessions, CSRF tokens and an audit log.

Modules: :mod:`~riskctl.console.security` (hashing, roles, tokens, rate limit; no I/O),
:mod:`~riskctl.console.accounts` (users, sessions, audit in MySQL), :mod:`~riskctl.console.forms` (the rule
editor), :mod:`~riskctl.console.backtest`, :mod:`~riskctl.console.app` (the Starlette application).
"""
