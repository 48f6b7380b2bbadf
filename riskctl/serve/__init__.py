"""riskctl serve: the synchronous decision API (docs/api.md)."""
