"""gptoss.server"""
