"""Simulated traffic with labelled attacks, and the report of what the engine caught (pure: no Kafka here)."""

from __future__ import annotations

from riskctl.sim.generator import ATTACKS, SimConfig, Simulator, attacks_in, generate
from riskctl.sim.report import build_report, format_report

__all__ = ["ATTACKS", "SimConfig", "Simulator", "attacks_in", "build_report", "format_report", "generate"]
