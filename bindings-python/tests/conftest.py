import os

import pytest


def pytest_configure(config):
    # The native backend needs root; CI runs as root. Fail loudly instead of skipping.
    if os.geteuid() != 0:
        raise pytest.UsageError("the vana-sandbox tests need root (the native backend creates namespaces and cgroups)")
