"""What a person reads: figures, summary.md, the HTML report, the terminal summary and the
explain figure, all drawn from the run's tables and the entries' own declarations."""
