"""What the controller's tests share: the OpenADR tests' certificates (``tests.support.vtn``),
made once per module."""

from __future__ import annotations

import pytest

from tests.support.vtn import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))
