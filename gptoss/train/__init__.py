"""gptoss.train"""
