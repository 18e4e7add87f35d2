"""The Metaflow side of the pipeline: the flow (tune_flow.py, wiring only), its cards, and where a run's files live.

Everything here may import Metaflow; nothing under `steps/` does.
"""
