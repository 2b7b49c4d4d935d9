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


def test_public_classes_and_functions_claim_the_package() -> None:
    """``patchassign.Dispatcher``, not ``patchassign.dispatch.Dispatcher`` (httpx's rule)."""
    for name in patchassign.__all__:
        obj = getattr(patchassign, name)
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__code__")):
            assert obj.__module__ == "patchassign", name


def test_the_names_the_design_promises_are_public() -> None:
    promised = [
        "apply_patch",
        "make_patch",
        "apply_merge_patch",
        "make_merge_patch",
        "merge_to_json_patch",
        "json_patch_to_merge",
        "JsonPatch",
        "Pointer",
        "Add",
        "Remove",
        "Replace",
        "Move",
        "Copy",
        "Test",
        "Assign",
        "Unassign",
        "Delegate",
        "Merge",
        "Patch",
        "Set",
        "Dispatcher",
        "Result",
        "RetryPolicy",
        "Limits",
        "Transport",
        "MockTransport",
        "PatchassignError",
    ]
    assert set(promised) <= set(patchassign.__all__)


def test_every_error_the_package_raises_has_one_root() -> None:
    errors = [
        obj
        for name in patchassign.__all__
        if isinstance(obj := getattr(patchassign, name), type) and issubclass(obj, Exception)
    ]
    assert len(errors) >= 15
    for cls in errors:
        assert issubclass(cls, patchassign.PatchassignError), cls
    # callers that catch ValueError keep working
    for cls in (patchassign.InvalidPatch, patchassign.InvalidChange, patchassign.ConfigError):
        assert issubclass(cls, ValueError)


def test_the_package_imports_without_aiohttp() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'aiohttp':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import patchassign\n"
        "from patchassign import Dispatcher, MockTransport, HttpResponse\n"
        "assert 'aiohttp' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
