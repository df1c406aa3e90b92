# The same fixtures as the state tests (both table backends) and the end-to-end scenarios.
from tests.e2e.conftest import make_simulation  # noqa: F401
from tests.state.conftest import store, table  # noqa: F401
