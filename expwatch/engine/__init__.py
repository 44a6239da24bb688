"""The engine loop and the parts it wires: reading runs' files, persisting their state, recovery.

A log line becomes a decision in ``rules/decide.py``; this package only
moves events to the Decider and decisions to ``actions/``.
"""
