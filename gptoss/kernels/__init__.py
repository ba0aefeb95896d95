"""gptoss.kernels"""
