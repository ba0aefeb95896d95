"""gptoss.engine"""
