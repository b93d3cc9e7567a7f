"""The fault-injection replay's amoCRM half (the Bitrix24 half and the checks: test_fault_replay.py)."""

from __future__ import annotations

import pytest

from leadwatch.testing.stack import AMO_TENANT
from tests.integration.test_fault_replay import faulty_deliveries

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_five_thousand_faulty_amocrm_deliveries_lose_nothing_and_double_nothing(caplog, progress):
    faulty_deliveries(AMO_TENANT, caplog, progress)
