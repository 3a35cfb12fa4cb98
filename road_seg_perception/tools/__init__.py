"""Command-line tools: predict, bag building, offline evaluation and reports, live replay, demo, model card, bench."""
