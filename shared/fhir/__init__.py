"""FHIR helpers shared by the services: errors as OperationOutcome, bundles, identifiers."""
