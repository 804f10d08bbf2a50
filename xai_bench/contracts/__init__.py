"""The contracts between the harness and what it benchmarks: what a model, a method and a
metric must offer, what each declares about itself, and how their parameters are checked."""
