"""Policies: small pure decisions named after the SMTP phase they act on (Haraka style).

Each policy returns a `Verdict` (an SMTP reply) and does no network I/O. The RCPT phase is:

- `rcpt_address`   parse the RCPT TO path as aiosmtpd hands it over (`Mailbox`, `AddressError`)
- `directory`      the local recipient directory exported from AD/Exchange, and its watcher
- `relay_networks` the clients allowed to relay to the internet (Postfix's mynetworks)
- `rcpt_chain`     the RCPT-time decision: syntax, routing tricks, relay control, user unknown
"""
