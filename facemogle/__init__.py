"""Face-MoGLE: a mixture of global and local experts on a frozen FLUX transformer (arXiv 2509.00428)."""
