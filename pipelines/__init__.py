"""The Dagster code location of equivar: thin wiring around :mod:`equivar_core.stages`."""
