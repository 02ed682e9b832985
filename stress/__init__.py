"""The stress suite: 1,199 concurrent tests against the seed's service graph (``python -m stress``).

::

    python -m stress                                   # 1,199 tests in one event loop
    python -m stress --faults 0.05 --seed 7            # hook failures, cancellations, errors
    python -m stress --baseline --json out.json --plot out.png
    python -m stress --tests 10000 --history .stress-history.json

    python -m pytest stress                            # the same tests under pytest-asyncio
    python -m pytest stress -p asyncio-cooperative -p no:asyncio --max-asyncio-tasks 1199 \\
        -W ignore::pytest.PytestRemovedIn10Warning     # ... all at once (cooperative)

One module per concept:

``scenario``  the tests and their assertions (isolation both ways: clean on entry, own writes seen)
``graph``     the service graph (``mockpool.services.seed_specs``, sized for shared members)
``faults``    ``--faults``: failing hooks, and tests that raise, discard or are cancelled
``runner``    all tests at once, one task each, an outcome per test
``baseline``  ``--baseline``: a fresh double per test, and the cost of a double alone
``timeline``  samples over time (concurrency, pool sizes, waiters, waits, faults, recoveries, RSS)
``progress``  the rich progress bar; ``plot``: the PNG (matplotlib)
``results``   the JSON report, the end-of-run checks, the summary table
``cli``       ``python -m stress``: options, the run, the checks, the exit code
"""
