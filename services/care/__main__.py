"""``python -m services.care``: run this service alone with the real adapters (its own code and shared/)."""

from services.care.app import SPEC
from shared.process import main_for

main_for(SPEC)
