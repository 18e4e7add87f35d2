"""The evaluation folder's files, named once for the ranks that write them and the controller that reads them."""

GENERATIONS_FILE = "generations.parquet"
"""One row per prompt and engine (`steps.results.GenerationRow`)."""
PROBES_FILE = "probes.parquet"
"""One row per probe and model (`steps.results.ProbeRow`); absent when no probes ran."""
SUMMARY_FILE = "eval_summary.json"
"""`steps.results.EvalSummary`."""
