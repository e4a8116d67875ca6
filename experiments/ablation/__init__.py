"""The expert and gate ablation (`python -m experiments.ablate_gating`): variants, runs (study), statistics,
gate usage and attribute probes, learning curves, the guidance sweep, the report, SLURM."""
