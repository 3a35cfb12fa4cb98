"""Command-line tools: bag building, offline evaluation, benchmarking and the demo."""
