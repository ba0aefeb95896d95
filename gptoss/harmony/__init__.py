"""gptoss.harmony"""
