"""Shared core: resources, task life cycle, policy views, the Trace, configs.

Imports nothing else from testbed.
"""
