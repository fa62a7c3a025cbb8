"""``python -m services.intake``: run this service alone with the real adapters."""

from lhcie.runner import main_for

main_for("intake")
