from __future__ import annotations
import __future__

import patchassign


def test_public_api_is_exactly_all() -> None:
    """Everything in __all__ exists, is sorted, and nothing public is left out of it."""
    assert patchassign.__all__ == sorted(patchassign.__all__)
    exported = {name for name in dir(patchassign) if not name.startswith("_")}
    # Submodules and the `annotations` future flag are not API.
    modules = {
        name
        for name in exported
        if type(getattr(patchassign, name)).__name__ == "module"
        or isinstance(getattr(patchassign, name), __future__._Feature)
    }
    assert exported - modules == set(patchassign.__all__) - {"__version__"}
    for name in patchassign.__all__:
        assert hasattr(patchassign, name), name


def test_public_classes_claim_the_package() -> None:
    for name in patchassign.__all__:
        obj = getattr(patchassign, name)
        if isinstance(obj, type):
            assert obj.__module__.startswith("patchassign."), name
