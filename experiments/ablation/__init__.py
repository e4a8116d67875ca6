"""The expert and gate ablation (`python -m experiments.ablate_gating`): variants, runs, table, plot, SLURM."""
