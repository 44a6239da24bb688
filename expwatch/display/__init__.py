"""What ``expwatch watch`` shows while it runs: a live table on a terminal, one line per event elsewhere.

Both are fed only by copies: audit records through ``AuditLog.add_listener``
and ``EngineLoop.views()`` snapshots. A display never touches the engine's state,
and a slow or broken display can never hold up a decision.
"""
