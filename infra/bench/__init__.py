"""`make bench`: the quality bars of design.md measured side by side with their baselines.

Every figure is measured in one run and, where design.md states a bar, compared with a baseline
measured in the same run (a ratio), so that the machine's speed and load cancel out as far as
they can. Nothing here is a timed assertion: the bench reports, ``docs/performance.md`` explains.

Run ``python -m infra.bench`` (``make bench``); ``--quick`` for a shorter sweep, ``--help`` for
the rest. Results go to ``.bench/results.json`` and a table on stdout.
"""
