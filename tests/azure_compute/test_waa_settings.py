"""The WAA container and golden image settings (adapters/settings.py): WAA's values by default,
validated, every error naming its setting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.compute.golden import parse_golden_image_url
from adapters.settings import AppSettings
from domain.jobs import ContainerOptions
from tests.support.settings_env import assert_malformed, fresh_settings

NAMES = (
    "WAA_CONTAINER_DEVICES",
    "WAA_CONTAINER_CAP_ADD",
    "WAA_CONTAINER_SHM_SIZE",
    "WAA_GOLDEN_IMAGE_URL",
    "VM_GOLDEN_IMAGE_DIR",
    "WAA_COMPUTE_IDENTITY_ID",
)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from fresh_settings(monkeypatch, NAMES)


def test_defaults_are_waas_own_launch_options() -> None:
    s = AppSettings()  # type: ignore[call-arg]
    assert s.container_options == ContainerOptions(
        devices=("/dev/kvm",), cap_add=("NET_ADMIN",), shm_size="16g"
    )
    assert s.waa_golden_image_url is None
    assert s.vm_golden_image_dir == "/srv/waa/storage"
    assert s.compute_identity_id is None


def test_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAA_CONTAINER_DEVICES", "/dev/kvm, /dev/net/tun")
    monkeypatch.setenv("WAA_CONTAINER_CAP_ADD", "NET_ADMIN,SYS_NICE")
    monkeypatch.setenv("WAA_CONTAINER_SHM_SIZE", "32g")
    options = AppSettings().container_options  # type: ignore[call-arg]
    assert options.run_options() == [
        "--device=/dev/kvm",
        "--device=/dev/net/tun",
        "--cap-add=NET_ADMIN",
        "--cap-add=SYS_NICE",
        "--shm-size=32g",
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WAA_CONTAINER_DEVICES", "kvm"),
        ("WAA_CONTAINER_DEVICES", "/dev/kvm;rm -rf /"),
        ("WAA_CONTAINER_CAP_ADD", "net_admin"),
        ("WAA_CONTAINER_SHM_SIZE", "16 GB"),
        ("WAA_GOLDEN_IMAGE_URL", "http://waagolden.blob.core.windows.net/golden/storage"),
        ("WAA_GOLDEN_IMAGE_URL", "https://example.com/golden/storage"),
        ("WAA_GOLDEN_IMAGE_URL", "https://waagolden.blob.core.windows.net/"),
        ("WAA_GOLDEN_IMAGE_URL", "https://waagolden.blob.core.windows.net/golden/s?sv=2024&sig=x"),
        ("WAA_GOLDEN_IMAGE_URL", "https://waagolden.blob.core.windows.net/Golden_1/storage"),
        ("WAA_GOLDEN_IMAGE_URL", "https://waagolden.blob.core.windows.net/golden/../x"),
        ("VM_GOLDEN_IMAGE_DIR", "relative/storage"),
        ("WAA_COMPUTE_IDENTITY_ID", "id-waa"),
    ],
)
def test_a_malformed_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    assert_malformed(monkeypatch, name, value)


def test_a_golden_image_url_and_its_parts() -> None:
    image = parse_golden_image_url("https://waagolden.blob.core.windows.net/golden/waa/storage/")
    assert (image.account, image.container, image.path) == ("waagolden", "golden", "waa/storage")
    assert image.url == "https://waagolden.blob.core.windows.net/golden/waa/storage"
    root = parse_golden_image_url("https://waagolden.blob.core.windows.net/golden")
    assert root.path == "" and root.url.endswith("/golden")
