import pytest

from policies.relay_networks import TrustedNetworks

NETS = TrustedNetworks(["127.0.0.0/8", "::1", "10.20.0.0/16", "[2001:db8:10::]/48",
                        "192.0.2.25"])


@pytest.mark.parametrize("ip,inside", [
    ("127.0.0.1", True), ("127.255.1.2", True), ("::ffff:127.0.0.1", True),
    ("::FFFF:10.20.30.40", True), ("::1", True), ("[::1]", True), ("2001:db8:10:ff::1", True),
    ("192.0.2.25", True), (" 10.20.1.1 ", True),
    ("192.0.2.26", False), ("10.21.0.1", False), ("2001:db8:11::1", False),
    ("::ffff:192.0.2.26", False), ("::127.0.0.1", False), ("fe80::1%eth0", False),
    ("", False), ("localhost", False), ("10.20.1", False), ("999.1.1.1", False),
    ("10.20.0.0/16", False), (None, False), (167772161, False),
])
def test_membership(ip, inside):
    assert (ip in NETS) is inside


def test_ipv4_mapped_network_is_read_as_ipv4():
    assert "10.1.2.3" in TrustedNetworks(["::ffff:10.0.0.0/104"])


@pytest.mark.parametrize("cidr,message", [
    ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
    ("0.0.0.0/0", "open relay"),
    ("::/0", "open relay"),
    ("10.0.0.0/33", "10.0.0.0/33"),
    ("example.com", "example.com"),
    ("", "''"),
])
def test_bad_cidr_named(cidr, message):
    with pytest.raises(ValueError, match=message):
        TrustedNetworks(["127.0.0.0/8", cidr])


def test_empty_trusts_nobody():
    assert "127.0.0.1" not in TrustedNetworks([])
