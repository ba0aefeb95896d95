"""gptoss.tools"""
