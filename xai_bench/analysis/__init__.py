"""Statistics of the records (intervals, paired comparisons, rank groups, agreement,
replicates) and the paper's claims tested on them."""
