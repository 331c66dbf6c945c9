"""What sgns-train does to start faster (docs/startup.md): the cyclic garbage collector is paused while the
libraries load, then everything loaded is frozen and collection resumes."""

from __future__ import annotations

import gc

from sgns.cli.common import collect_again, defer_collection


def test_collection_is_paused_until_the_libraries_are_loaded_then_resumes() -> None:
    assert gc.isenabled()
    try:
        defer_collection()
        assert not gc.isenabled()
        collect_again()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        collect_again()  # once only
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
