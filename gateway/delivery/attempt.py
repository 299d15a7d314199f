"""One delivery attempt of a group of recipients to one next hop, across its MX-ordered hosts.

The next hop is resolved (gateway.delivery.mx: MX first, then A/AAAA, or an IP literal) into
preference groups, equal preferences already shuffled so the load is shared. Hosts are tried in
that order: a connection failure, or a 4xx for the whole transaction, moves on to the next host;
once every host of one preference has failed, the next preference (the other site) takes over in
the same attempt, with no admin action and no queue retry. A 5xx for a recipient bounces that
recipient only. Recipients still without a final answer after the last host stay pending
(deferred). A smarthost name that fails to resolve, even permanently (NXDOMAIN, null MX, no
address), defers with 4.3.5: it is a configuration problem, never a reason to bounce. Addresses
that refused a connection are remembered as down (hostcache) and tried after every other address
for a while: last, never skipped, so the memory alone never defers mail.
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.delivery.hostcache import HostCache
from gateway.delivery.mx import MxResolver, ResolveError
from gateway.delivery.transport import Transport
from gateway.router import NextHop
from spool.states import RcptState

#: Most addresses tried for one next hop in one attempt (Postfix: smtp_mx_address_limit = 5,
#: raised here because a smarthost set of two sites often has more).
MAX_ADDRESSES = 10


@dataclass(frozen=True)
class RcptResult:
    state: RcptState          # DELIVERED, BOUNCED, or PENDING (temporary failure)
    code: int | None
    text: str
    host: str = ""            # "name[address]:port" that gave the answer


async def deliver_group(hop: NextHop, mail_from: str, rcpts: list[str], data: bytes, *,
                        smtputf8: bool, body_8bit: bool, resolver: MxResolver,
                        transport: Transport, hosts: HostCache, log,
                        before_final_dot=None) -> dict[str, RcptResult]:
    """Deliver ``data`` to ``rcpts`` through ``hop``; return a result for every recipient.
    ``before_final_dot`` (a callable, sync or async, or None) is asked just before each final
    dot; False withholds the dot and ends the attempt (the rest stays pending, no other host
    is tried: the claim is no longer ours)."""
    try:
        groups = await resolver.resolve(hop.spec, hop.port)
    except ResolveError as e:
        # A smarthost that does not resolve is our configuration problem, not the recipient's:
        # defer with 4.3.5 instead of bouncing everything (Postfix does the same for relayhost,
        # smtp_connect.c "relayhost configuration problem").
        permanent = e.permanent and hop.kind != "smarthost"
        state = RcptState.BOUNCED if permanent else RcptState.PENDING
        code, text = e.code, f"{e.status} {e}"
        if e.permanent and not permanent:
            code, text = 451, f"4.3.5 smarthost configuration problem: {text}"
        log.info("resolve_failed", next_hop=hop.spec, permanent=permanent, error=text)
        return {r: RcptResult(state, code, text) for r in rcpts}
    candidates = [(h, a, h.port) for group in groups for h in group for a in h.addresses]
    results: dict[str, RcptResult] = {}
    remaining = list(rcpts)
    last = RcptResult(RcptState.PENDING, 451, f"4.4.1 no usable host for {hop.spec}")
    for host, addr, _port in hosts.order(candidates[:MAX_ADDRESSES]):
        where = f"{host.name}[{addr}]:{host.port}"
        res = await transport.send(addr, host.port, host.name, hop.tls, mail_from, remaining, data,
                                   smtputf8=smtputf8, body_8bit=body_8bit,
                                   before_final_dot=before_final_dot)
        if not res.connected:
            hosts.mark_down(addr, host.port)
            last = RcptResult(RcptState.PENDING, None, f"4.4.1 connect to {where}: {res.error}", where)
            log.info("host_failed", next_hop=hop.spec, host=where, error=res.error)
            continue
        hosts.mark_up(addr, host.port)
        still = []
        for r in remaining:
            code, text = res.rcpt.get(r, (451, "4.4.2 no reply"))
            if 200 <= code < 300:
                results[r] = RcptResult(RcptState.DELIVERED, code, text, where)
            elif code >= 500:
                results[r] = RcptResult(RcptState.BOUNCED, code, text, where)
            else:
                last = RcptResult(RcptState.PENDING, code, text, where)
                results[r] = last
                still.append(r)
        remaining = still
        if res.fenced:
            log.warning("final_dot_withheld", host=where, rcpts=len(remaining), reason=res.error)
            break
        if res.unknown_outcome:
            # the peer may hold the message already: another host now could duplicate it
            log.warning("outcome_unknown", host=where, rcpts=len(remaining), error=res.error)
            break
        if not remaining:
            break
    for r in remaining:
        results[r] = RcptResult(RcptState.PENDING, last.code, last.text, last.host)
    return results
