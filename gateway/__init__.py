"""mailgate's gateway: SMTP intake, routing, delivery, the application supervisor and the CLI."""
