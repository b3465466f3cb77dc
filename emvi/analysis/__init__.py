"""Reading fitted results: plots, ArviZ conversion, model comparison."""
