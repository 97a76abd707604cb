"""Graph execution: the one layer that calls spec, design, estimation, inference and derivatives."""
