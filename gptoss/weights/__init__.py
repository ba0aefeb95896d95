"""gptoss.weights"""
