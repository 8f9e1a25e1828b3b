"""Fitting the network to a signal: pretraining, the gated fit, QAT and quality presets."""
