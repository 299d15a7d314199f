"""Client TLS contexts (gateway/delivery/transport.py ``client_tls_context``): one per (verify,
CA file) policy, built once and shared by delivery and the probes, and it works over real TLS: a
trustme CA, an SMTP sink offering STARTTLS with a certificate it issued, verified deliveries and a
verified SMTP probe through the same context. Issue 6 item 13 (the TLS part)."""
from __future__ import annotations

import pytest

from gateway.delivery.transport import SmtpTransport, TlsPolicy, client_tls_context
from gateway.health import SmtpInboundProbe

MX1 = "mx1.site-a.smarthost.test"


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory):
    """(ca_pem, cert_pem, key_pem) paths: a trustme CA and a certificate for MX1."""
    import trustme
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert(MX1, "127.0.0.11")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem")


def test_one_context_per_policy(tls_ca):
    ca = tls_ca[0]
    assert client_tls_context(True, ca) is client_tls_context(True, ca)
    assert client_tls_context(False) is client_tls_context(False, None)
    assert client_tls_context(True) is client_tls_context(True)
    assert len({id(client_tls_context(True, ca)), id(client_tls_context(True)),
                id(client_tls_context(False))}) == 3          # a policy of its own each


async def test_deliveries_and_probe_over_real_tls_share_one_context(peers, tls_ca):
    ca, cert, key = tls_ca
    sink = peers.sink("127.0.0.11", None, "mx1", "--tls", f"{cert},{key}")
    transport = SmtpTransport("gw.test", idle_timeout=0)       # no reuse: a new TLS session each
    policy = TlsPolicy("required", verify=True, ca_file=ca)
    try:
        for n in range(2):
            res = await transport.send("127.0.0.11", sink.port, MX1, policy, "a@remote.test",
                                       ["bob@example.com"], b"Subject: tls %d\r\n\r\nx\r\n" % n)
            assert res.connected and res.rcpt["bob@example.com"][0] == 250, res
    finally:
        await transport.close()
    assert [env["tls"] for env, _ in sink.messages()] == [True, True]

    async def hosts():
        return [(MX1, "127.0.0.11", sink.port)]

    probe = SmtpInboundProbe("smtp:mx1", hosts, canary_rcpt="postmaster@example.com",
                             mail_from="probe@gw.test", helo="gw.test", tls="required",
                             verify_tls=True, ca_file=ca, timeout=5.0)
    r = await probe.check()
    assert r.ok, r.detail
    assert probe._tls_context() is client_tls_context(True, ca)   # the same object delivery used
