"""libiscsi conformance harness: run iscsi-test-cu, parse outcomes, compare with expectations."""
