"""gptoss.model"""
