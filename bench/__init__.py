"""The benchmarks: a repo folder, importable from a checkout (run from its root), never installed.

``python bench/run_bench.py`` (``make bench``) measures everything in one run; the other scripts
here measure one thing each. The naive baseline, the targets and the py-spy handling live here.
"""
