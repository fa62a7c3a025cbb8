"""``python -m services.storage``: run this service alone with the real adapters."""

from lhcie.runner import main_for

main_for("storage")
