"""The care service: end-of-life care plans and transfers of care (repatriations, discharge summaries)."""
