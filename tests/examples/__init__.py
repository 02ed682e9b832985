"""A suite written the way FastAPI + SQLAlchemy projects write theirs, before and after mockpool.

``cases.py`` holds the test bodies once; ``before/`` runs them on the classic per-test schema
fixture, ``after/`` on a pooled session. ``python benchmarks/examples.py`` times both.
"""
