"""Fixtures of the real-peer tests: one server process per test module, always terminated."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers.peer_servers import DotPeer, OidcPeer, start_dot_peer, start_oidc_peer


@pytest.fixture(scope="module")
def dot_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DotPeer]:
    peer = start_dot_peer(tmp_path_factory.mktemp("dot-peer"))
    try:
        yield peer
    finally:
        peer.server.stop()


@pytest.fixture(scope="module")
def oidc_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcPeer]:
    peer = start_oidc_peer(tmp_path_factory.mktemp("oidc-peer"))
    try:
        yield peer
    finally:
        peer.server.stop()
