"""``python -m services.agreements``: run this service alone with the real adapters (its own code and shared/)."""

from services.agreements.app import SPEC
from shared.process import main_for

main_for(SPEC)
