"""CPU fast paths; each is tested against gptoss.kernels.reference."""
