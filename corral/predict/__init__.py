"""Prediction: quantile models of each workload's CPU use."""
