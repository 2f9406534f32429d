"""Reports about a network: the summary table and the lecture arithmetic."""
